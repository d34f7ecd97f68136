/**
 * Low-level binding to the OpenSlide C library through Deno FFI (`--unstable-ffi`).
 *
 * The library is found from `OPENSLIDE_LIB` (a path), then the usual names on Linux
 * (`libopenslide.so.1`, `libopenslide.so.0`), macOS (Homebrew's `libopenslide.dylib`) and Windows.
 * Most code should use {@link Slide} instead of this module.
 *
 * @module
 */

const SYMBOLS = {
  openslide_get_version: { parameters: [], result: "pointer" },
  openslide_detect_vendor: { parameters: ["buffer"], result: "pointer" },
  openslide_open: { parameters: ["buffer"], result: "pointer" },
  openslide_close: { parameters: ["pointer"], result: "void" },
  openslide_get_error: { parameters: ["pointer"], result: "pointer" },
  openslide_get_level_count: { parameters: ["pointer"], result: "i32" },
  openslide_get_level_dimensions: { parameters: ["pointer", "i32", "buffer", "buffer"], result: "void" },
  openslide_get_level_downsample: { parameters: ["pointer", "i32"], result: "f64" },
  openslide_get_best_level_for_downsample: { parameters: ["pointer", "f64"], result: "i32" },
  openslide_read_region: {
    parameters: ["pointer", "buffer", "i64", "i64", "i32", "i64", "i64"],
    result: "void",
  },
  openslide_read_region_nonblocking: {
    name: "openslide_read_region",
    parameters: ["pointer", "buffer", "i64", "i64", "i32", "i64", "i64"],
    result: "void",
    nonblocking: true,
  },
  openslide_get_property_names: { parameters: ["pointer"], result: "pointer" },
  openslide_get_property_value: { parameters: ["pointer", "buffer"], result: "pointer" },
  openslide_get_associated_image_names: { parameters: ["pointer"], result: "pointer" },
  openslide_get_associated_image_dimensions: {
    parameters: ["pointer", "buffer", "buffer", "buffer"],
    result: "void",
  },
  openslide_read_associated_image: { parameters: ["pointer", "buffer", "buffer"], result: "void" },
} as const;

/** The loaded OpenSlide symbols. */
export type OpenSlideSymbols = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** Library names tried in order when `OPENSLIDE_LIB` is not set. */
export const OPENSLIDE_LIBRARY_NAMES: readonly string[] = (() => {
  switch (Deno.build.os) {
    case "darwin":
      return [
        "libopenslide.1.dylib",
        "libopenslide.dylib",
        "/opt/homebrew/lib/libopenslide.1.dylib",
        "/opt/homebrew/lib/libopenslide.dylib",
        "/usr/local/lib/libopenslide.1.dylib",
        "/usr/local/lib/libopenslide.dylib",
      ];
    case "windows":
      return ["libopenslide-1.dll", "libopenslide-0.dll"];
    default:
      return ["libopenslide.so.1", "libopenslide.so.0"];
  }
})();

let loaded: { lib: Deno.DynamicLibrary<typeof SYMBOLS>; path: string } | undefined;
let loadError: string | undefined;

function tryLoad(): void {
  if (loaded || loadError !== undefined) return;
  if (typeof Deno.dlopen !== "function") {
    loadError = "Deno FFI is not enabled: run deno with --unstable-ffi (and --allow-ffi or -A)";
    return;
  }
  let env: string | undefined;
  try {
    env = Deno.env.get("OPENSLIDE_LIB");
  } catch { /* no env permission */ }
  const names = env ? [env] : [...OPENSLIDE_LIBRARY_NAMES];
  const reasons: string[] = [];
  for (const name of names) {
    try {
      loaded = { lib: Deno.dlopen(name, SYMBOLS), path: name };
      return;
    } catch (e) {
      reasons.push(`${name}: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  const hint = Deno.build.os === "darwin"
    ? "brew install openslide"
    : Deno.build.os === "windows"
    ? "put libopenslide-1.dll on PATH"
    : "apt-get install -y libopenslide0";
  loadError = `OpenSlide library not found (${hint}, or set OPENSLIDE_LIB to its path). Tried: ${
    reasons.join("; ")
  }`;
}

/**
 * Whether the OpenSlide library can be loaded (FFI enabled and the shared library present).
 *
 * @example
 * ```ts
 * if (!openslideAvailable()) console.log(openslideUnavailableReason());
 * ```
 */
export function openslideAvailable(): boolean {
  tryLoad();
  return loaded !== undefined;
}

/**
 * Why OpenSlide cannot be loaded, or `undefined` when it can.
 *
 * @example
 * ```ts
 * const why = openslideUnavailableReason();
 * ```
 */
export function openslideUnavailableReason(): string | undefined {
  tryLoad();
  return loadError;
}

/**
 * The OpenSlide symbols; throws a clear error when the library or FFI is unavailable.
 *
 * @example
 * ```ts
 * const version = cString(openslide().openslide_get_version());
 * ```
 */
export function openslide(): OpenSlideSymbols {
  tryLoad();
  if (!loaded) throw new Error(`lib/wsi: ${loadError}`);
  return loaded.lib.symbols;
}

/**
 * Reads a NUL-terminated C string, or returns `undefined` for a null pointer.
 *
 * @example
 * ```ts
 * const version = cString(openslide().openslide_get_version());
 * ```
 */
export function cString(ptr: Deno.PointerValue): string | undefined {
  if (ptr === null) return undefined;
  return Deno.UnsafePointerView.getCString(ptr);
}

/**
 * Reads a NULL-terminated array of C strings (`const char * const *`).
 *
 * @example
 * ```ts
 * const names = cStringArray(openslide().openslide_get_property_names(handle));
 * ```
 */
export function cStringArray(ptr: Deno.PointerValue): string[] {
  const out: string[] = [];
  if (ptr === null) return out;
  const view = new Deno.UnsafePointerView(ptr);
  for (let i = 0;; i++) {
    const p = view.getPointer(i * 8);
    if (p === null) break;
    out.push(Deno.UnsafePointerView.getCString(p));
  }
  return out;
}

/**
 * Encodes a string as a NUL-terminated UTF-8 buffer for a `const char *` argument.
 *
 * @example
 * ```ts
 * const vendor = cString(openslide().openslide_detect_vendor(toCString("slide.tif")));
 * ```
 */
export function toCString(s: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(s);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

/**
 * The OpenSlide version string (e.g. `"3.4.1"`).
 *
 * @example
 * ```ts
 * console.log(openslideVersion());
 * ```
 */
export function openslideVersion(): string {
  return cString(openslide().openslide_get_version()) ?? "unknown";
}

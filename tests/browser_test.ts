/**
 * Tests of the browser check (tools/browser_check.ts): notebooks with a good figure and image pass, and the
 * same notebooks with a figure broken on purpose, a PNG that does not decode, a figure missing from the page
 * or an error output fail, with the reason. The HTML copies are made the way `deno task notebooks` makes them
 * (nbconvert, then plotly.js inlined) and opened offline in headless Chromium. Skipped, with the reason
 * printed, where Chromium or nbconvert is not installed (CI installs both).
 */
import { join } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import {
  checkHtmlCopy,
  checkLiveNotebook,
  compareOutputs,
  expectedOutputs,
  launchChromium,
  projectCopy,
  startJupyter,
} from "../tools/browser_check.ts";
import { displayBundle, Figure, findChromium, PngImage, renderImage } from "../lib/viz/mod.ts";
import { inlinePlotlyIntoHtml } from "../lib/viz/figure.ts";

async function hasNbconvert(): Promise<boolean> {
  try {
    const r = await new Deno.Command("/usr/bin/python3", {
      args: ["-c", "import nbconvert"],
      stderr: "null",
    }).output();
    return r.success;
  } catch {
    return false;
  }
}

const chromium = findChromium();
const nbconvert = await hasNbconvert();
const skip = !chromium
  ? "no Chromium (apt-get install -y chromium-headless-shell)"
  : !nbconvert
  ? "no nbconvert (apt-get install -y jupyter-nbconvert)"
  : undefined;
if (skip) console.warn(`browser_test: skipped: ${skip}`);

type Output = Record<string, unknown>;

async function displayOutput(x: unknown): Promise<Output> {
  return { output_type: "display_data", metadata: {}, data: await displayBundle(x) };
}

function notebook(outputs: Output[][]): Record<string, unknown> {
  return {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: { kernelspec: { name: "deno", display_name: "Deno", language: "typescript" } },
    cells: outputs.map((o, i) => ({
      id: `c${i}`,
      cell_type: "code",
      execution_count: i + 1,
      metadata: {},
      source: [`// cell ${i}`],
      outputs: o,
    })),
  };
}

/** Writes `<dir>/<name>.ipynb` and its HTML copy exactly as tools/run_notebooks.ts does. */
/** Figures in these small pages draw within milliseconds; a broken one is reported after this wait. */
const quick = { figureWaitMs: 5000 };

async function exportNotebook(
  dir: string,
  name: string,
  nb: Record<string, unknown>,
): Promise<[string, string]> {
  const ipynb = join(dir, `${name}.ipynb`), html = join(dir, `${name}.html`);
  await Deno.writeTextFile(ipynb, JSON.stringify(nb));
  const r = await new Deno.Command("/usr/bin/python3", {
    args: ["-m", "nbconvert", "--to", "html", "--log-level", "WARN", "--output-dir", dir, ipynb],
    stdout: "null",
    stderr: "piped",
  }).output();
  assert(r.success, new TextDecoder().decode(r.stderr));
  await Deno.writeTextFile(html, inlinePlotlyIntoHtml(await Deno.readTextFile(html)));
  return [html, ipynb];
}

const goodFigure = () =>
  new Figure([{ type: "scatter", mode: "lines+markers", x: [1, 2, 3], y: [2, 1, 3] }], {
    title: { text: "good" },
  });

Deno.test("compareOutputs() names every kind of problem and passes a clean page", () => {
  const expected = expectedOutputs(notebook([[
    { output_type: "display_data", data: { "application/vnd.plotly.v1+json": {}, "text/html": "" } },
    { output_type: "display_data", data: { "image/png": "" } },
  ]]) as never);
  assertEquals([expected.figures, expected.pngs], [1, 1]);
  const fine = {
    figures: [{ drawn: true, traces: 1, text: "" }],
    images: [{ decoded: true, width: 4, height: 2, declaredWidth: 4, declaredHeight: 2 }],
  };
  assertEquals(compareOutputs(expected, fine, []), []);
  const bad = compareOutputs(expected, {
    figures: [{ drawn: true, traces: 0, text: "" }],
    images: [{ decoded: true, width: 4, height: 4, declaredWidth: 4, declaredHeight: 2 }],
  }, ["boom"]);
  assertEquals(bad, [
    "figure 1 drew axes but no data traces",
    "PNG 1 is 4x4; its header says 4x2",
    "browser console: boom",
  ]);
  const withError = expectedOutputs(
    notebook([[{ output_type: "error", ename: "TypeError", evalue: "x" }]]) as never,
  );
  assertEquals(withError.errors, ["cell 0: TypeError: x"]);
});

Deno.test({
  name: "checkHtmlCopy() passes a good exported notebook and fails each figure or image broken on purpose",
  ignore: skip !== undefined,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "browser_test_" });
    const { browser, close } = await launchChromium();
    try {
      const png = await renderImage(
        { data: new Float32Array(8 * 6 * 3).fill(0.5), height: 6, width: 8, channels: 3 },
        { scale: 3 },
      );
      const good = [[await displayOutput(goodFigure())], [await displayOutput(png)]];
      const ok = await checkHtmlCopy(browser, ...(await exportNotebook(dir, "good", notebook(good))), quick);
      assertEquals(ok.problems, []);
      assertEquals([ok.figures, ok.pngs], [1, 1]);

      // One notebook with everything broken on purpose (one page load: plotly.js takes seconds to parse).
      // Figure 2: data plotly cannot draw (x and y are not arrays): axes, no trace.
      const invalid = await displayOutput(
        new Figure([{ type: "scatter", x: "not an array", y: 42 } as never], { title: { text: "broken" } }),
      );
      // Figure 3: its drawing script is broken (a syntax error in the spec): no SVG and a console error.
      const cut = await displayOutput(goodFigure());
      const html = (cut.data as Record<string, string>)["text/html"];
      (cut.data as Record<string, string>)["text/html"] = html.replace(/var spec = \{/, "var spec = {{");
      // PNG 2: damaged after its header: it declares 24x18 but does not decode.
      const bytes = new Uint8Array(png.png);
      bytes.fill(7, 40, bytes.length - 12);
      const damaged = await displayOutput(new PngImage(bytes, png.width, png.height));
      const error = { output_type: "error", ename: "RangeError", evalue: "on purpose", traceback: [] };
      const broken = notebook([[await displayOutput(goodFigure())], [invalid], [cut], good[1], [damaged], [
        error,
      ]]);
      const [brokenHtml, brokenIpynb] = await exportNotebook(dir, "broken", broken);
      // A figure the page lost: the notebook holds one more plotly output than its HTML copy shows.
      const nb = JSON.parse(await Deno.readTextFile(brokenIpynb));
      nb.cells[0].outputs.push(await displayOutput(goodFigure()));
      await Deno.writeTextFile(brokenIpynb, JSON.stringify(nb));
      const r = await checkHtmlCopy(browser, brokenHtml, brokenIpynb, quick);
      const problems = r.problems.join("\n");
      assertEquals(r.problems.slice(0, 5), [
        "error output in cell 5: RangeError: on purpose",
        "4 plotly outputs in the notebook, 3 figures in the page",
        "figure 2 drew axes but no data traces",
        "figure 3 did not draw (no plotly SVG)",
        "PNG 2 did not decode (declared 24x18)",
      ], problems);
      assert(r.problems.slice(5).some((p) => p.startsWith("browser console: uncaught")), problems);
    } finally {
      await close();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

async function hasNotebookServer(): Promise<boolean> {
  const r = await new Deno.Command("sh", { args: ["-c", "command -v jupyter-notebook"], stdout: "null" })
    .output();
  return r.success;
}

const liveSkip = skip ??
  (!(await hasNotebookServer()) ? "no jupyter-notebook (apt-get install -y jupyter-notebook)" : undefined);
if (liveSkip && !skip) console.warn(`browser_test: live notebook test skipped: ${liveSkip}`);

Deno.test({
  name: "checkLiveNotebook() fails a notebook whose figure does not draw and whose last cell throws",
  ignore: liveSkip !== undefined,
  sanitizeOps: false,
  sanitizeResources: false,
  fn: async () => {
    const dir = await projectCopy();
    const source = (lines: string[]) => lines.map((l, i) => (i < lines.length - 1 ? `${l}\n` : l));
    const cells = [
      ['import { Figure, PngImage, show } from "../lib/mod.ts";'],
      ['await show(new Figure([{ type: "scatter", x: [1, 2], y: [2, 1] }]));'],
      ['await show(new Figure([{ type: "scatter", x: "not an array", y: 42 } as never]));'],
      ['throw new RangeError("on purpose");'],
    ].map((src, i) => ({
      id: `c${i}`,
      cell_type: "code",
      execution_count: null,
      metadata: {},
      outputs: [],
      source: source(src),
    }));
    await Deno.writeTextFile(
      join(dir, "notebooks", "zz_broken.ipynb"),
      JSON.stringify({
        nbformat: 4,
        nbformat_minor: 5,
        metadata: { kernelspec: { name: "deno", display_name: "Deno", language: "typescript" } },
        cells,
      }),
    );
    const server = await startJupyter(dir, Deno.env.toObject());
    const { browser, close } = await launchChromium();
    try {
      const r = await checkLiveNotebook(browser, server, "zz_broken", { timeoutMs: 10 * 60_000 });
      assertEquals(r.figures, 2);
      assertEquals(r.problems, [
        "error output in cell 3: RangeError: on purpose",
        "figure 2 drew axes but no data traces",
      ]);
    } finally {
      await close();
      await server.stop();
      await Deno.remove(dir, { recursive: true });
    }
  },
});

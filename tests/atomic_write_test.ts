/**
 * writeFileAtomic / writeFileAtomicSync: the data reaches the disk before the rename (fsync of the
 * temporary file) and the rename before the call returns (fsync of the folder). Checked on the real
 * system calls, traced with strace.
 */
import { writeFileAtomic, writeFileAtomicSync } from "../lib/util/mod.ts";
import { assert, assertEquals } from "./_assert.ts";

const MODULE = new URL("../lib/util/atomic_write.ts", import.meta.url).href;

Deno.test("writeFileAtomic() and writeFileAtomicSync() fsync the file before the rename and the folder after it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const script = `${dir}/write.ts`;
    Deno.writeTextFileSync(
      script,
      `import { writeFileAtomic, writeFileAtomicSync } from ${JSON.stringify(MODULE)};\n` +
        `await writeFileAtomic(${JSON.stringify(`${dir}/out/a.json`)}, "{\\"a\\": 1}");\n` +
        `writeFileAtomicSync(${JSON.stringify(`${dir}/out/b.json`)}, new Uint8Array([1, 2, 3]));\n`,
    );
    // -y prints the path behind each file descriptor; -f follows Deno's I/O threads.
    const trace = `${dir}/trace.txt`;
    const res = await new Deno.Command("strace", {
      args: ["-f", "-qq", "-y", "-e", "trace=fsync,fdatasync,rename,renameat,renameat2", "-o", trace]
        .concat([Deno.execPath(), "run", "-A", script]),
    }).output();
    assert(res.success, `strace/deno failed: ${new TextDecoder().decode(res.stderr)}`);
    assertEquals(Deno.readTextFileSync(`${dir}/out/a.json`), '{"a": 1}');
    assertEquals([...Deno.readFileSync(`${dir}/out/b.json`)], [1, 2, 3]);
    const lines = Deno.readTextFileSync(trace).split("\n").filter((l) => l.includes(`${dir}/out`));
    for (const name of ["a.json", "b.json"]) {
      const target = `${dir}/out/${name}`;
      const syncTmp = lines.findIndex((l) => /\b(fsync|fdatasync)\(/.test(l) && l.includes(`<${target}.`));
      const rename = lines.findIndex((l) => l.includes("rename") && l.includes(`"${target}"`));
      const syncDir = lines.findIndex((l, i) => i > rename && /sync\(\d+<[^>]*\/out>\)/.test(l));
      const trail = lines.join("\n");
      assert(rename >= 0, `${name}: no rename onto the target in\n${trail}`);
      assert(
        syncTmp >= 0 && syncTmp < rename,
        `${name}: the temporary file is not fsynced before the rename\n${trail}`,
      );
      assert(syncDir > rename, `${name}: the folder is not fsynced after the rename\n${trail}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("writeFileAtomic() leaves no temporary file behind and keeps the old file when the rename fails", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // The target is a non-empty folder: the rename fails after the data was written and synced.
    Deno.mkdirSync(`${dir}/t/x`, { recursive: true });
    let failed = 0;
    await writeFileAtomic(`${dir}/t`, "data").catch(() => failed++);
    try {
      writeFileAtomicSync(`${dir}/t`, "data");
    } catch {
      failed++;
    }
    assertEquals(failed, 2);
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name), ["t"]);
    assertEquals([...Deno.readDirSync(`${dir}/t`)].map((e) => e.name), ["x"]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

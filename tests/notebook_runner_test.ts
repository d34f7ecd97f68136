/**
 * The headless notebook runner (tools/nbrun.py) against the real Deno Jupyter kernel: no output lost over
 * repeated runs (the Deno kernel can publish outputs after `idle`), cell errors and timeouts fail with the
 * cell named, and notebook type-checking finds errors. Skipped, visibly, where Jupyter or the kernel is absent.
 */
import { join, resolve } from "node:path";
import { assert, assertEquals } from "./_assert.ts";
import { notebookToModule } from "../tools/check_notebooks.ts";

const root = resolve(new URL("..", import.meta.url).pathname);

async function findPython(): Promise<string | undefined> {
  for (const py of ["/usr/bin/python3", "python3"]) {
    try {
      const r = await new Deno.Command(py, {
        args: [
          "-c",
          "import nbclient\nfrom jupyter_client.kernelspec import KernelSpecManager as K\nassert 'deno' in K().find_kernel_specs()",
        ],
        stderr: "null",
      }).output();
      if (r.success) return py;
    } catch { /* absent */ }
  }
  return undefined;
}

const py = await findPython();
if (!py) {
  console.log(
    "SKIP notebook runner tests: no Python with nbclient and a registered Deno kernel " +
      "(apt-get install python3-nbclient jupyter-client; deno jupyter --install)",
  );
}

function notebook(cells: string[]): string {
  return JSON.stringify({
    cells: cells.map((src, i) => ({
      cell_type: "code",
      id: `t${i}`,
      execution_count: null,
      metadata: {},
      outputs: [],
      source: src,
    })),
    metadata: { kernelspec: { name: "deno", display_name: "Deno", language: "typescript" } },
    nbformat: 4,
    nbformat_minor: 5,
  });
}

async function run(cells: string[], extra: string[] = []) {
  const dir = await Deno.makeTempDir({ prefix: "nbrun_test_" });
  const src = join(dir, "t.ipynb"), out = join(dir, "out.ipynb");
  await Deno.writeTextFile(src, notebook(cells));
  const r = await new Deno.Command(py!, {
    args: [join(root, "tools/nbrun.py"), src, out, ...extra],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const executed = JSON.parse(await Deno.readTextFile(out));
  await Deno.remove(dir, { recursive: true });
  const dec = new TextDecoder();
  return { code: r.code, stdout: dec.decode(r.stdout), stderr: dec.decode(r.stderr), executed };
}

Deno.test({
  name: "nbrun.py loses no cell output over repeated runs of a 12-cell notebook",
  ignore: !py,
  fn: async () => {
    const cells = Array.from({ length: 12 }, (_, i) => `console.log("stdout of cell ${i}");\n${i} * 2;`);
    for (let rep = 0; rep < 4; rep++) {
      const { code, executed } = await run(cells);
      assertEquals(code, 0);
      // nbformat stores multi-line strings as lists of lines.
      const str = (v: unknown) => (Array.isArray(v) ? v.join("") : String(v ?? ""));
      type Out = { output_type: string; text?: string[]; data?: Record<string, string[]> };
      executed.cells.forEach((c: { outputs: Out[] }, i: number) => {
        const text = c.outputs.filter((o) => o.output_type === "stream").map((o) => str(o.text)).join("");
        const result = c.outputs.find((o) => o.output_type === "execute_result");
        assert(text.includes(`stdout of cell ${i}`), `run ${rep}, cell ${i}: stream output lost`);
        assert(
          str(result?.data?.["text/plain"]).includes(String(i * 2)),
          `run ${rep}, cell ${i}: execute_result lost`,
        );
      });
    }
  },
});

Deno.test({
  name: "nbrun.py fails on a cell error and names the cell",
  ignore: !py,
  fn: async () => {
    const { code, stderr } = await run(["1 + 1;", 'throw new Error("boom in the second cell");', "3;"]);
    assertEquals(code, 1);
    assert(stderr.includes("cell 1"), stderr);
    assert(stderr.includes("boom in the second cell"), stderr);
    // The last line is a one-line summary for the runner's table.
    assert(
      stderr.trim().split("\n").at(-1)!.includes("cell 1 failed: Error: boom in the second cell"),
      stderr,
    );
  },
});

Deno.test({
  name: "nbrun.py drops a malformed output message, says which, and runs the rest of the notebook",
  ignore: !py,
  fn: async () => {
    // A display bundle whose text/plain is a number (nbformat refuses it) and one without metadata: plain
    // nbclient ends the whole run with a Python traceback on either.
    const { code, stderr, executed } = await run([
      'await Deno.jupyter.broadcast("display_data", { data: { "text/plain": 5 }, metadata: {} });\n"first";',
      'await Deno.jupyter.broadcast("display_data", { data: { "text/plain": "x" } });\n"second";',
      '"third";',
    ]);
    assertEquals(code, 0, stderr);
    assert(stderr.includes("cell 0: dropped a malformed 'display_data' message"), stderr);
    assert(stderr.includes("content {data: {text/plain: int}"), stderr);
    assert(
      stderr.includes("cell 1: dropped a malformed 'display_data' message from the kernel (KeyError"),
      stderr,
    );
    assert(stderr.includes("2 kernel message(s) dropped"), stderr);
    const str = (v: unknown) => (Array.isArray(v) ? v.join("") : String(v ?? ""));
    type Out = { output_type: string; name?: string; text?: string[]; data?: Record<string, string[]> };
    const outs = executed.cells.map((c: { outputs: Out[] }) => c.outputs);
    // The drop is recorded in the executed copy, and every cell still has its result.
    assert(outs[0].some((o: Out) => o.name === "stderr" && str(o.text).includes("dropped")));
    ["first", "second", "third"].forEach((w, i) =>
      assert(
        outs[i].some((o: Out) =>
          o.output_type === "execute_result" && str(o.data?.["text/plain"]).includes(w)
        ),
        `cell ${i}: result lost`,
      )
    );
  },
});

Deno.test({
  name: "nbrun.py marks the output stream broken when a kernel message cannot be read, and keeps reading",
  ignore: !py,
  fn: async () => {
    // jupyter_client raises "Invalid Signature" on a message the Deno kernel corrupted (very large outputs).
    // A fake IOPub channel stands in for the kernel: the unreadable message, then a stream, then idle.
    const script = `
import asyncio, json, sys
from queue import Empty
sys.path.insert(0, sys.argv[1])
import nbformat, nbrun
msgs = [ValueError("Invalid Signature: b'00'"),
        {"msg_type": "stream", "parent_header": {"msg_id": "p"}, "header": {"msg_type": "stream"},
         "content": {"name": "stdout", "text": "hello"}},
        {"msg_type": "status", "parent_header": {"msg_id": "p"}, "header": {"msg_type": "status"},
         "content": {"execution_state": "idle"}}]
class Channel:
    async def get_msg(self, timeout=None):
        if not msgs: raise Empty
        m = msgs.pop(0)
        if isinstance(m, Exception): raise m
        return m
class KC: iopub_channel = Channel()
nb = nbformat.v4.new_notebook(); nb.cells = [nbformat.v4.new_code_cell("1")]
c = nbrun.DrainingClient(nb, record_timing=False); c.reset_execution_trackers()
c.clear_before_next_output = False; c.kc = KC(); c.drain_seconds = 0.05
asyncio.run(c._async_poll_output_msg("p", nb.cells[0], 0))
print(json.dumps({"broken": c.stream_broken, "outputs": [o.get("text") for o in nb.cells[0].outputs]}))
`;
    const r = await new Deno.Command(py!, {
      args: ["-c", script, join(root, "tools")],
      stdout: "piped",
      stderr: "piped",
    })
      .output();
    const err = new TextDecoder().decode(r.stderr);
    assert(r.success, err);
    const out = JSON.parse(new TextDecoder().decode(r.stdout));
    assertEquals(out.broken, [0, "ValueError: Invalid Signature: b'00'"]);
    assert(
      err.includes("cell 0: could not read a message from the kernel (ValueError: Invalid Signature"),
      err,
    );
    assertEquals(out.outputs.length, 2, "the note, then the stream that came after the bad message");
    assert(out.outputs[0].includes("could not read"));
    assertEquals(out.outputs[1], "hello");
  },
});

Deno.test({
  name: "nbrun.py treats a cell timeout as a failure",
  ignore: !py,
  fn: async () => {
    const { code, stderr } = await run(["await new Promise((r) => setTimeout(r, 20000));"], [
      "--timeout",
      "3",
    ]);
    assertEquals(code, 2);
    assert(stderr.includes("timed out"), stderr);
  },
});

Deno.test({
  name: "nbrun.py --events reports cells, printed text and in-place displays as they happen",
  ignore: !py,
  fn: async () => {
    const { code, stdout, stderr } = await run([
      'console.log("hello from cell 1");',
      'await Deno.jupyter.broadcast("display_data", { data: { "text/plain": "bar 50% | 1/2 img" }, metadata: {}, ' +
      'transient: { display_id: "p1" } });\n' +
      'await Deno.jupyter.broadcast("update_display_data", { data: { "text/plain": "bar 100% | 2/2 img" }, ' +
      'metadata: {}, transient: { display_id: "p1" } });',
    ], ["--events"]);
    assertEquals(code, 0, stderr);
    const events = stdout.split("\n").filter((l) => l.startsWith("@nbrun ")).map((l) =>
      JSON.parse(l.slice(7))
    );
    assertEquals(events[0], { e: "start", cells: 2 });
    assertEquals(events.filter((e) => e.e === "cell").map((e) => [e.n, e.of]), [[1, 2], [2, 2]]);
    assertEquals(events.filter((e) => e.e === "done").length, 2);
    assert(events.some((e) => e.e === "out" && e.text.includes("hello from cell 1")), stdout);
    assertEquals(events.filter((e) => e.e === "bar").map((e) => [e.id, e.text]), [
      ["p1", "bar 50% | 1/2 img"],
      ["p1", "bar 100% | 2/2 img"],
    ]);
    // Events come in order: a cell's output between its start and its end.
    const at = (f: (e: { e: string; n?: number; text?: string }) => boolean) => events.findIndex(f);
    assert(at((e) => e.e === "cell" && e.n === 1) < at((e) => e.e === "out"));
    assert(at((e) => e.e === "out") < at((e) => e.e === "done" && e.n === 1));
  },
});

Deno.test({
  name: "deno task compare shows cell and training progress, stops on SIGINT and --resume finishes (quick)",
  ignore: !py,
  fn: async () => {
    // Seed 97 of the synthetic set keeps this run in folders of its own (results/*/quick_synthetic_s97),
    // ignored by git and used by nothing else.
    const runs = join(root, "results/runs/study_quick_synthetic_s97");
    const report = join(root, "results/study/quick_synthetic_s97");
    const state = join(root, "results/notebooks/compare_quick_synthetic_s97.json");
    const clean = () =>
      Promise.all([runs, report, state].map((d) => Deno.remove(d, { recursive: true }).catch(() => {})));
    await clean();
    const args = [
      "run",
      "-A",
      join(root, "tools/compare.ts"),
      "--profile",
      "quick",
      "--dataset",
      "synthetic",
      "--only",
      "01_resnet18",
      "--no-html",
    ];
    const decoder = new TextDecoder();
    try {
      const env = { CNNVIT_SEED: "97" };
      const child = new Deno.Command(Deno.execPath(), { args, env, stdout: "piped", stderr: "piped" })
        .spawn();
      const stderr = new Response(child.stderr).text();
      let out = "";
      let stopped = false;
      for await (const chunk of child.stdout) {
        out += decoder.decode(chunk, { stream: true });
        // Interrupt in the middle of training, once its progress has been relayed.
        if (!stopped && /train epoch \d+\/\d+ \d+%/.test(out)) {
          stopped = true;
          child.kill("SIGINT");
        }
      }
      const { code } = await child.status;
      const err = await stderr;
      assert(stopped, `no training progress line before the end:\n${out}\n${err}`);
      assertEquals(code, 130, `${out}\n${err}`);
      assert(/\[01_resnet18 · cell \d+\/\d+ · \d+s( · ETA all \S+)?\]/.test(out), out);
      assert(
        /01_resnet18 · train epoch \d+\/\d+ \d+% · \d+\/\d+ img · [\d.]+ img\/s · ETA \S+/.test(out),
        out,
      );
      assert(/01_resnet18\s+STOPPED/.test(out), out);
      assert(out.includes("interrupted in code cell") || out.includes("interrupted (SIGINT)"), out);
      assert(out.includes("--only 01_resnet18 --no-html --resume"), out);
      assert(!out.includes("Traceback"), out);
      // The interrupted training run is there to resume.
      await Deno.stat(join(runs, "resnet18", "config.json"));

      const r = await new Deno.Command(Deno.execPath(), { args: [...args, "--resume"], env }).output();
      const out2 = decoder.decode(r.stdout);
      assertEquals(r.code, 0, `${out2}\n${decoder.decode(r.stderr)}`);
      assert(/resum/i.test(out2), out2);
      assert(/\[01_resnet18 · cell \d+\/\d+ · /.test(out2), out2);
      // The final summary block.
      assert(out2.includes("Notebook                      result   seconds"), out2);
      assert(/01_resnet18\s+ok\s+[\d.]+/.test(out2), out2);
      assert(out2.includes("notebooks: 1 passed, 0 failed"), out2);
      assert(out2.includes("no verdict yet for results/study/quick_synthetic_s97"), out2);
      await Deno.stat(join(report, "01_resnet18", "results.md"));
    } finally {
      await clean();
    }
  },
});

Deno.test({
  name: "run_notebooks.ts --resume skips the notebooks its --state file records as finished",
  ignore: !py,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "nbstate_test_" });
    try {
      const state = join(dir, "state.json");
      // The study's report folder name of profile quick.
      const ds = Deno.env.get("CNNVIT_DATASET");
      const tag = ds && ds !== "auto" ? `quick_${ds}` : "quick";
      await Deno.writeTextFile(
        state,
        JSON.stringify({ profile: "quick", reportTag: tag, done: ["00_environment"] }),
      );
      const r = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          join(root, "tools/run_notebooks.ts"),
          "--profile",
          "quick",
          "--out",
          dir,
          "--state",
        ]
          .concat([state, "--resume", "00_environment"]),
      }).output();
      const out = new TextDecoder().decode(r.stdout);
      assertEquals(r.code, 0, out + new TextDecoder().decode(r.stderr));
      assert(out.includes("--resume: skipping 00_environment (finished earlier)"), out);
      assert(out.includes("notebooks: 0 passed, 0 failed"), out);
      assert(!out.includes("=== 00_environment"), out);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("notebookToModule() joins code cells with cell markers and comments out magics", () => {
  const m = notebookToModule({
    cells: [
      { cell_type: "markdown", source: "# title" },
      { cell_type: "code", source: ["const a = 1;\n", "a;"] },
      { cell_type: "code", source: "%%time\nconst b: number = a + 1;" },
    ],
  });
  assert(m.includes("// ---- cell 1 ----\nconst a = 1;\na;"));
  assert(m.includes("// %%time"));
  assert(!m.includes("# title"));
});

Deno.test("every notebook cell's source ends with a newline (deno 2.9's fmt --check flags a cell that does not)", () => {
  // `deno fmt` leaves such a file byte-identical, but `deno fmt --check` reports it as not formatted (its
  // cache hides that once `deno fmt` has run on the machine), so a fresh clone fails the check.
  for (const e of Deno.readDirSync(join(root, "notebooks"))) {
    if (!e.name.endsWith(".ipynb")) continue;
    const nb = JSON.parse(Deno.readTextFileSync(join(root, "notebooks", e.name))) as {
      cells: { source: string[] }[];
    };
    nb.cells.forEach((c, i) => {
      if (c.source.length > 0) {
        assert(c.source.at(-1)!.endsWith("\n"), `${e.name}: cell ${i} does not end with a newline`);
      }
    });
  }
});

#!/usr/bin/env python3
"""Execute one Jupyter notebook headlessly with nbclient and write the executed copy.

Used by `deno task notebooks` (tools/run_notebooks.ts); usable alone:

    python3 tools/nbrun.py notebooks/00_environment.ipynb results/notebooks/00_environment.ipynb \
        --timeout 900 --kernel deno

Why a subclass: the Deno kernel sometimes publishes a cell's `stream` / `execute_result` / `display_data`
messages *after* its `status: idle` message. Plain nbclient stops reading a cell's output at idle and
drops them (about one run in four lost some output). DrainingClient keeps reading the IOPub channel
for a short grace period after idle, so late messages land in the right cell.

Exit codes: 0 ok, 1 a cell raised (the cell index and error are printed), 2 a cell timed out or the kernel
died, 3 bad arguments.
"""
import argparse
import asyncio
import os
import sys
import time
from queue import Empty

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionComplete, CellExecutionError, CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async


class DrainingClient(NotebookClient):
    """NotebookClient that keeps reading a cell's IOPub messages for `drain_seconds` after `idle`."""

    drain_seconds = 0.5

    async def _async_poll_output_msg(self, parent_msg_id, cell, cell_index):
        await super()._async_poll_output_msg(parent_msg_id, cell, cell_index)
        deadline = time.monotonic() + self.drain_seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                msg = await ensure_async(self.kc.iopub_channel.get_msg(timeout=left))
            except Empty:
                return
            if msg["parent_header"].get("msg_id") != parent_msg_id:
                continue
            if msg["msg_type"] == "status":
                continue
            try:
                self.process_message(msg, cell, cell_index)
            except CellExecutionComplete:
                pass


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("notebook")
    ap.add_argument("output")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    ap.add_argument("--kernel", default="deno")
    ap.add_argument("--drain", type=float, default=0.5, help="seconds to keep reading after idle")
    ap.add_argument("--cwd", default=None, help="working directory of the kernel (default: the notebook's folder)")
    a = ap.parse_args()
    if not os.path.isfile(a.notebook):
        print(f"nbrun: notebook not found: {a.notebook}", file=sys.stderr)
        return 3
    nb = nbformat.read(a.notebook, as_version=4)
    cwd = a.cwd or os.path.dirname(os.path.abspath(a.notebook))
    client = DrainingClient(nb, timeout=a.timeout, kernel_name=a.kernel, resources={"metadata": {"path": cwd}},
                            allow_errors=False, record_timing=True)
    client.drain_seconds = a.drain
    code = 0
    try:
        client.execute()
    except CellTimeoutError as e:
        print(f"nbrun: {a.notebook}: a cell timed out after {a.timeout}s (the kernel was stopped):\n{e}", file=sys.stderr)
        code = 2
    except DeadKernelError as e:
        print(f"nbrun: {a.notebook}: the kernel died: {e}", file=sys.stderr)
        code = 2
    except CellExecutionError as e:
        idx = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(
            o.get("output_type") == "error" for o in c.get("outputs", []))), None)
        where = f"cell {idx}" if idx is not None else "a cell"
        print(f"nbrun: {a.notebook}: {where} failed:\n{e}", file=sys.stderr)
        code = 1
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    tmp = a.output + ".tmp"
    nbformat.write(nb, tmp)
    os.replace(tmp, a.output)
    return code


if __name__ == "__main__":
    sys.exit(main())

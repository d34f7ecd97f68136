#!/usr/bin/env python3
"""Execute one Jupyter notebook headlessly with nbclient and write the executed copy.

Used by `deno task notebooks` (tools/run_notebooks.ts); usable alone:

    python3 tools/nbrun.py notebooks/00_environment.ipynb results/notebooks/00_environment.ipynb \
        --timeout 900 --kernel deno

Why a subclass:
- The Deno kernel sometimes publishes a cell's `stream` / `execute_result` / `display_data` messages
  *after* its `status: idle` message. Plain nbclient stops reading a cell's output at idle and drops them
  (about one run in four lost some output). DrainingClient keeps reading the IOPub channel for a short
  grace period after idle, so late messages land in the right cell.
- Plain nbclient lets one malformed output message (say a display bundle whose value is not a string, which
  nbformat refuses) escape as a Python traceback that ends the whole run, with no word of which cell or
  message. DrainingClient drops such a message, says so on stderr and in the cell's outputs (message type,
  reason, the bundle's keys and value types), and carries on, as JupyterLab would.

- With `--events`, it reports progress on stdout as it happens, one JSON object per line after the prefix
  `@nbrun `: `{"e": "start", "cells": N}` (N code cells), `{"e": "cell", "n": k, "of": N}` when code cell k
  (from 1) starts, `{"e": "done", "n": k, "seconds": s}` when it ends, `{"e": "out", "name": "stdout",
  "text": ...}` for a cell's printed text and `{"e": "bar", "id": ..., "text": ...}` for an in-place updated
  display (the progress bars of lib/util/progress.ts). tools/run_notebooks.ts draws them in the terminal.
- SIGINT or SIGTERM stops the kernel, writes the executed copy so far and exits 130.

Exit codes: 0 ok, 1 a cell raised (the cell index and error are printed), 2 a cell timed out or the kernel
died, 3 bad arguments, 4 the runner itself failed or the kernel's output stream broke (not a cell error; said
on stderr), 130 interrupted (SIGINT/SIGTERM).
"""
import argparse
import asyncio
import atexit
import json
import os
import signal
import sys
import time
import traceback
from contextlib import asynccontextmanager
from queue import Empty

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionComplete, CellExecutionError, CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async

# Consecutive failures to read the IOPub channel before giving up (a closed socket fails every time).
MAX_READ_FAILURES = 20


def _parent_id(msg):
    return (msg.get("parent_header") or {}).get("msg_id")


def _shape(value, depth=0):
    """A short description of a message's content: keys and value types, never the (possibly huge) values."""
    if isinstance(value, dict) and depth < 2:
        return "{" + ", ".join(f"{k}: {_shape(v, depth + 1)}" for k, v in list(value.items())[:12]) + "}"
    if isinstance(value, str):
        return f"str({len(value)})"
    return type(value).__name__


class DrainingClient(NotebookClient):
    """NotebookClient that reads a cell's IOPub messages for `drain_seconds` after `idle` and survives
    malformed messages."""

    drain_seconds = 0.5

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.problems = []
        self.stream_broken = None  # (cell index, reason) of the first unreadable IOPub message
        self.events = False  # write progress events on stdout (--events)
        self.interrupted = None  # the signal's name once SIGINT/SIGTERM arrived
        self.current_cell = None  # code-cell ordinal (from 1) running now
        self._code_ordinal = {}

    def _event(self, **ev):
        if not self.events:
            return
        try:
            sys.stdout.write("@nbrun " + json.dumps(ev) + "\n")
            sys.stdout.flush()
        except (OSError, ValueError):  # the reader went away: progress is optional
            self.events = False

    def _on_signal(self, name):
        if self.interrupted is None:
            self.interrupted = name
            print(f"nbrun: {name}: stopping the kernel", file=sys.stderr, flush=True)
            asyncio.ensure_future(self._async_cleanup_kernel())
            atexit.unregister(self._cleanup_kernel)  # as nbclient's own handler does: stopped once, here

    @asynccontextmanager
    async def async_setup_kernel(self, **kwargs):
        async with super().async_setup_kernel(**kwargs):
            # nbclient's own handlers stop the kernel; ours also remember why, to exit 130 and say so.
            loop = asyncio.get_event_loop()
            try:
                loop.add_signal_handler(signal.SIGINT, self._on_signal, "SIGINT")
                loop.add_signal_handler(signal.SIGTERM, self._on_signal, "SIGTERM")
            except (RuntimeError, NotImplementedError):
                pass
            code = [c for c in self.nb.cells if c.cell_type == "code"]
            self._code_ordinal = {id(c): i + 1 for i, c in enumerate(code)}
            self._event(e="start", cells=len(code))
            yield

    async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
        if self.interrupted:
            raise KeyboardInterrupt(self.interrupted)
        n = self._code_ordinal.get(id(cell))
        if n is None:
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        self.current_cell = n
        self._event(e="cell", n=n, of=len(self._code_ordinal), index=cell_index)
        t0 = time.monotonic()
        try:
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)
        finally:
            self._event(e="done", n=n, seconds=round(time.monotonic() - t0, 3))

    def _relay(self, msg):
        """Progress events for a cell's printed text and its in-place updated displays."""
        kind = msg.get("msg_type")
        content = msg.get("content") or {}
        if kind == "stream" and isinstance(content.get("text"), str):
            self._event(e="out", name=content.get("name", "stdout"), text=content["text"][:4000])
        elif kind in ("display_data", "update_display_data"):
            display_id = (content.get("transient") or {}).get("display_id")
            text = (content.get("data") or {}).get("text/plain")
            if display_id and isinstance(text, str):
                self._event(e="bar", id=str(display_id), text=text[:400])

    def _report(self, cell, cell_index, what):
        text = f"nbrun: cell {cell_index}: {what}"
        self.problems.append(text)
        print(text, file=sys.stderr, flush=True)
        if cell is not None:
            cell.outputs.append(nbformat.v4.new_output("stream", name="stderr", text=text + "\n"))

    def process_message(self, msg, cell, cell_index):
        if self.events:
            self._relay(msg)
        try:
            return super().process_message(msg, cell, cell_index)
        except CellExecutionComplete:
            raise
        except Exception as e:  # noqa: BLE001 - one bad message must not end the run
            reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
            self._report(cell, cell_index, f"dropped a malformed '{msg.get('msg_type')}' message from the kernel "
                         f"({type(e).__name__}: {reason}); content {_shape(msg.get('content'))}")
            return None

    async def _read(self, timeout, cell, cell_index, failures):
        """One IOPub message, or None when a message could not be decoded (reported; the caller goes on)."""
        try:
            msg = await ensure_async(self.kc.iopub_channel.get_msg(timeout=timeout))
        except Empty:
            raise
        except Exception as e:  # noqa: BLE001 - e.g. a message jupyter_client cannot deserialize
            failures[0] += 1
            if failures[0] > MAX_READ_FAILURES:
                raise
            self._report(cell, cell_index, f"could not read a message from the kernel ({type(e).__name__}: {e})")
            if self.stream_broken is None:
                self.stream_broken = (cell_index, f"{type(e).__name__}: {e}")
            return None
        failures[0] = 0
        return msg

    async def _async_poll_output_msg(self, parent_msg_id, cell, cell_index):
        failures = [0]
        while True:  # until this cell's `idle`
            msg = await self._read(None, cell, cell_index, failures)
            if msg is None or _parent_id(msg) != parent_msg_id:
                continue
            try:
                self.process_message(msg, cell, cell_index)
            except CellExecutionComplete:
                break
        deadline = time.monotonic() + self.drain_seconds
        while True:  # late messages of this cell
            left = deadline - time.monotonic()
            if left <= 0:
                return
            try:
                msg = await self._read(left, cell, cell_index, failures)
            except Empty:
                return
            if msg is None or _parent_id(msg) != parent_msg_id or msg["msg_type"] == "status":
                continue
            try:
                self.process_message(msg, cell, cell_index)
            except CellExecutionComplete:
                pass


def _failure_code(a, nb, e) -> int:
    """Says on stderr why the run failed and returns the exit code (see the module's docstring)."""
    try:
        raise e
    except CellTimeoutError:
        print(f"nbrun: {a.notebook}: a cell timed out after {a.timeout}s (the kernel was stopped):\n{e}", file=sys.stderr)
        return 2
    except DeadKernelError as e:
        print(f"nbrun: {a.notebook}: the kernel died: {e}", file=sys.stderr)
        return 2
    except CellExecutionError as e:
        idx = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code" and any(
            o.get("output_type") == "error" for o in c.get("outputs", []))), None)
        where = f"cell {idx}" if idx is not None else "a cell"
        print(f"nbrun: {a.notebook}: {where} failed:\n{e}", file=sys.stderr)
        last = [ln for ln in str(e).splitlines() if ln.strip()]
        # One line at the end for summaries (the runner's table): where, and the error's last line.
        print(f"nbrun: {where} failed: {last[-1].strip() if last else type(e).__name__}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001 - the runner's own failure, told apart from a cell's
        traceback.print_exc()
        print(f"nbrun: {a.notebook}: the runner itself failed, not a cell ({type(e).__name__}: {e})", file=sys.stderr)
        return 4


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("notebook")
    ap.add_argument("output")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    ap.add_argument("--kernel", default="deno")
    ap.add_argument("--drain", type=float, default=0.5, help="seconds to keep reading after idle")
    ap.add_argument("--cwd", default=None, help="working directory of the kernel (default: the notebook's folder)")
    ap.add_argument("--events", action="store_true", help="write progress events on stdout (@nbrun JSON lines)")
    a = ap.parse_args()
    if not os.path.isfile(a.notebook):
        print(f"nbrun: notebook not found: {a.notebook}", file=sys.stderr)
        return 3
    nb = nbformat.read(a.notebook, as_version=4)
    cwd = a.cwd or os.path.dirname(os.path.abspath(a.notebook))
    client = DrainingClient(nb, timeout=a.timeout, kernel_name=a.kernel, resources={"metadata": {"path": cwd}},
                            allow_errors=False, record_timing=True)
    client.drain_seconds = a.drain
    client.events = a.events
    code = 0
    try:
        client.execute()
    except BaseException as e:  # noqa: BLE001 - an interrupt first, whatever it made nbclient raise
        if client.interrupted is None and not isinstance(e, KeyboardInterrupt):
            code = _failure_code(a, nb, e)
        else:
            where = f" in code cell {client.current_cell}" if client.current_cell else ""
            print(f"nbrun: {a.notebook}: interrupted ({client.interrupted or 'SIGINT'}){where}; the kernel was "
                  "stopped", file=sys.stderr)
            code = 130
    if client.problems:
        print(f"nbrun: {a.notebook}: {len(client.problems)} kernel message(s) dropped or unreadable (listed above)",
              file=sys.stderr)
    if code == 0 and client.stream_broken is not None:
        # Seen with the Deno kernel and very large outputs: once one message arrives corrupted, the IOPub stream
        # carries nothing more, so the executed copy misses every later output. Not a cell error.
        where, why = client.stream_broken
        print(f"nbrun: the kernel's output stream broke in cell {where} ({why[:120]}); outputs after it are "
              "missing (the Deno kernel corrupts very large outputs: keep each under 1 MiB)", file=sys.stderr)
        code = 4
    os.makedirs(os.path.dirname(os.path.abspath(a.output)), exist_ok=True)
    tmp = a.output + ".tmp"
    nbformat.write(nb, tmp)
    os.replace(tmp, a.output)
    return code


if __name__ == "__main__":
    sys.exit(main())

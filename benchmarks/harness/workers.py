"""Worker processes: a benchmark re-invokes itself with a hidden ``--worker KIND
--worker-params FILE`` (:func:`harness.cli.add_run_arguments`) so that the peak RSS of
each fit is its own; :func:`launch_worker` is the driver side, :func:`worker_main` the
worker side."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from .host import loadavg
from .quip import QuipTimeout


def worker_main(args, workers: dict, tool: str | None = None, finish=None) -> int:
    """Worker side of :func:`launch_worker`: the result of ``workers[args.worker](params)``
    with ``ok: True``, or ``ok: False`` and the error (printed, so that the driver reports
    it instead of crashing); ``finish(result)`` may add to it. Written to ``params["out"]``."""
    spec = json.loads(Path(args.worker_params).read_text())
    Path(spec["tmp"]).mkdir(parents=True, exist_ok=True)
    try:
        res = workers[args.worker](spec)
        res["ok"] = True
    except Exception as exc:  # noqa: BLE001 - report, do not crash the driver
        traceback.print_exc()
        res = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
               "timed_out": isinstance(exc, QuipTimeout)}
        if tool is not None:
            res = {"tool": tool, **res}
    if finish is not None:
        finish(res)
    Path(spec["out"]).write_text(json.dumps(res))
    return 0 if res["ok"] else 1


def launch_worker(script: Path, kind: str, params: dict, wdir: Path, env: dict,
                  timeout: float | None = None, quiet: bool = False, tool: str | None = None) -> dict:
    """Run ``script --worker kind --worker-params wdir/params.json`` in its own process (so
    that its peak RSS is its own) and read the JSON result it writes to ``wdir/result.json``;
    adds ``worker_wall_s`` and the 1-min load average before and after. After ``timeout`` s
    the worker's process group is killed. ``quiet``: the caller prints the progress."""
    tool = tool or kind
    wdir.mkdir(parents=True, exist_ok=True)
    out, pfile = wdir / "result.json", wdir / "params.json"
    pfile.write_text(json.dumps(dict(params, out=str(out), tmp=str(wdir))))
    cmd = [sys.executable, str(script), "--worker", kind, "--worker-params", str(pfile)]
    load_before = loadavg()
    if not quiet:
        print(f"[{time.strftime('%H:%M:%S')}] running {tool} ...", flush=True)
    t0 = time.perf_counter()
    # a new session only when it may have to be killed: else Ctrl-C reaches the worker too
    proc = subprocess.Popen(cmd, cwd=wdir, env=env, start_new_session=timeout is not None)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the worker's own process group only
        proc.wait()
        rc = None
    wall = time.perf_counter() - t0
    load_after = loadavg()
    if out.is_file():
        res = json.loads(out.read_text())
    else:
        res = {"tool": tool, "ok": False, "error": f"killed after --worker-timeout {timeout:g} s"
               if rc is None else f"worker exited {rc} without a result"}
    res.update(worker_wall_s=wall, loadavg_1min_before_after=[load_before, load_after])
    if not quiet:
        status = "ok" if res.get("ok") else "FAILED: " + str(res.get("error", "?"))
        print(f"[{time.strftime('%H:%M:%S')}] {tool} done in {wall:.1f} s wall ({status}); "
              f"1-min load average {load_before:.2f} before, {load_after:.2f} after "
              f"(the worker itself adds up to ~1-2 on this {os.cpu_count()}-CPU host)", flush=True)
    return res

"""A diagnosis for ``bench scale --gc-trace``: put on a flow process's ``PYTHONPATH``, it times every cyclic collection
of that process (``gc.callbacks``) and appends one JSON line per collection to ``EDDYLINE_BENCH_GC_TRACE``: wall time
at its end (s), the process id (a flow's helper processes inherit the setting), generation, duration (ms), objects
collected, and after a full collection the objects it left in generation 2 and frozen. The same file measures any
source tree, so builds compare under one instrument. The lines are written by a daemon thread each second, not in
the callback. When the file ``<trace>.leak`` appears (the harness makes it after the live load), that thread
collects in full, then unfreezes everything and collects again, and writes ``{"leak": N}``: cyclic garbage that
frozen objects held, which no collection would have freed; then it freezes again."""

from __future__ import annotations

import gc
import json
import os
import threading
import time

_PATH = os.environ.get("EDDYLINE_BENCH_GC_TRACE")


def _install(path: str) -> None:
    pending: list[dict[str, object]] = []
    began = [0.0]

    def callback(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            began[0] = time.perf_counter()
            return
        spent = time.perf_counter() - began[0]
        line: dict[str, object] = {"t": time.time(), "gen": info["generation"], "ms": round(1000 * spent, 2),
                                   "collected": info["collected"], "pid": os.getpid()}
        if info["generation"] == 2:
            line["gen2"] = len(gc.get_objects(2))
            line["frozen"] = gc.get_freeze_count()
        pending.append(line)

    def leak_check() -> None:
        gc.collect()
        began = time.perf_counter()
        gc.unfreeze()
        leaked = gc.collect()
        gc.freeze()
        pending.append({"t": time.time(), "leak": leaked, "leak_ms": round(1000 * (time.perf_counter() - began)),
                        "pid": os.getpid()})

    def write() -> None:
        checked = False
        while True:
            time.sleep(1.0)
            if not checked and os.path.exists(path + ".leak"):
                checked = True
                leak_check()
            if pending:
                taken = pending[:]
                del pending[:len(taken)]
                with open(path, "a") as f:
                    f.writelines(json.dumps(x) + "\n" for x in taken)

    gc.callbacks.append(callback)
    threading.Thread(target=write, name="eddyline-bench-gc-trace", daemon=True).start()


if _PATH:
    _install(_PATH)

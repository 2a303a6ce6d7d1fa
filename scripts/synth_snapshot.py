#!/usr/bin/env python3
"""Synthetic snapshots for scaling tests of `mphang report --from` (collection-free).

Usage: scripts/synth_snapshot.py --procs N [--threads T] [--shape flat|chain] [--wait sleep|lock] OUT

  --procs N     processes in the tree (the root plus N-1 descendants)
  --threads T   threads per process (default 1)
  --shape       flat: every process is a child of the root; chain: each is a child of the last
  --wait        sleep: every thread in clock_nanosleep (healthy); lock: every thread but the
                main thread waits on one private threading lock (each waiter's providers are
                all the other threads of its process)

Writes an `mphang/snapshot/v1` document. Used by tests/integration/safety/bounds.rs (the
1,000-thread JSON size and linear rendering) and by hand:

  python3 scripts/synth_snapshot.py --procs 100000 /tmp/big.json
  time mphang report --from /tmp/big.json > /dev/null
"""
import argparse
import json


def thread(tid, pid, wait, main):
    frames = [{"function": "main", "file": "/src/app.py", "line": 20},
              {"function": "<module>", "file": "/src/app.py", "line": 24}]
    if wait == "lock" and not main:
        syscall = {"kind": "blocked", "nr": 202, "name": "futex",
                   "args": [140480394300272, 393, 0, 0, 0, 4294967295],
                   "sp": 140480501463376, "pc": 140480508215062,
                   "decoded": {"call": "futex", "uaddr": 140480394300272, "op": 393, "val": 0,
                               "shared": False, "timed": False, "region": {"region": "heap"},
                               "word": {"value": 0, "high": 1, "owner_tid": 0}}}
        wchan = "futex_wait_queue"
        frames = [{"function": "work", "file": "/src/app.py", "line": 12}] + frames
    else:
        syscall = {"kind": "blocked", "nr": 230, "name": "clock_nanosleep",
                   "args": [1, 1, 140724873430752, 0, 0, 0], "sp": 140724873430728,
                   "pc": 139743122572547, "decoded": {"call": "sleep"}}
        wchan = "hrtimer_nanosleep"
    native = [{"addr": 139743122572547 + i, "module": "libc.so.6",
               "function": "fn%d" % i, "file": "x.c", "line": i} for i in range(12)]
    return {"tid": tid, "comm": "python3", "state": "S", "wchan": wchan, "syscall": syscall,
            "cpu_ticks": 2,
            "py": {"thread_id": 139743129766784 + tid, "name": "MainThread" if main else "w%d" % tid,
                   "owns_gil": False, "active": False, "frames": frames},
            "native": native,
            "later": [{"after_ms": 500, "alive": True, "state": "S", "cpu_ticks": 2,
                       "syscall": [syscall["nr"]] + syscall["args"][:3]}]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--shape", choices=["flat", "chain"], default="flat")
    ap.add_argument("--wait", choices=["sleep", "lock"], default="sleep")
    ap.add_argument("out")
    a = ap.parse_args()
    root = 1000
    stride = a.threads + 1
    procs = []
    for i in range(a.procs):
        pid = root + i * stride
        ppid = 999 if i == 0 else (root if a.shape == "flat" else pid - stride)
        threads = [thread(pid + k, pid, a.wait, k == 0) for k in range(a.threads)]
        procs.append({"pid": pid, "ppid": ppid, "comm": "python3",
                      "cmdline": ["python3", "/src/app.py"], "exe": "/usr/bin/python3.11",
                      "uid": 0, "state": "S", "start_ticks": 1000 + i, "cpu_ticks": 2,
                      "num_threads": a.threads, "nofile_limit": 1024, "fd_count": 0,
                      "python_version": "3.11.7", "role": "main" if i == 0 else "fork_child",
                      "threads": threads, "fds": [], "sem_maps": []})
    doc = {"schema": "mphang/snapshot/v1", "mphang_version": "0.1.0", "taken_at_ms": 0,
           "root": root, "clock_ticks": 100, "looks": 2, "interval_ms": 500, "collect_ms": 1,
           "max_stop_us": 10, "processes": procs, "pipes": [], "semaphores": [], "gone": [],
           "diagnostics": []}
    with open(a.out, "w") as f:
        json.dump(doc, f)


if __name__ == "__main__":
    main()

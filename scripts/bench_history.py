"""What run's stack history costs: `mphang run --timeout 60s -- python bench_tree.py 64` (a
hung tree of 64 processes) with the history on and with MPHANG_HISTORY=0. Once the tree is
ready and a warm-up has passed, mphang's utime+stime (all its threads, /proc/PID/stat) is
read at the start and end of a window, with its VmHWM (/proc/PID/status) at the end, and the
tree's own CPU over the same window (the reads do not stop it: it should stay ~0). The run is
then ended with two SIGINTs (forwarded, then the tree ended), before the timeout's diagnosis.

usage: python3 scripts/bench_history.py [--mphang PATH] [--python PY] [--procs 64]
                                        [--warmup 5] [--window 30] [--rounds 2] [--timeout 60s]
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid):
    """utime + stime of a process (all threads), in clock ticks; 0 once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def status_kb(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def one(args, history):
    tmp = tempfile.mkdtemp(prefix="mphang-bench-history-")
    ready = os.path.join(tmp, "ready.json")
    env = dict(os.environ, MPHANG_READY=ready, MPHANG_HISTORY="1" if history else "0")
    env.pop("GITHUB_ACTIONS", None)
    cmd = [args.mphang, "run", "--timeout", args.timeout, "--report-dir", os.path.join(tmp, "r"),
           "--", args.python, os.path.join(HERE, "bench_tree.py"), str(args.procs)]
    p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    tree = []
    try:
        deadline = time.time() + 50
        while not os.path.exists(ready):
            if time.time() > deadline or p.poll() is not None:
                raise SystemExit("the tree did not become ready")
            time.sleep(0.05)
        with open(ready) as f:
            r = json.load(f)
        tree = [r["root"]] + r["pids"]
        time.sleep(args.warmup)
        t0 = time.monotonic()
        m0, tr0 = cpu_ticks(p.pid), sum(cpu_ticks(q) for q in tree)
        time.sleep(args.window)
        t1 = time.monotonic()
        m1, tr1 = cpu_ticks(p.pid), sum(cpu_ticks(q) for q in tree)
        hwm, rss = status_kb(p.pid, "VmHWM"), status_kb(p.pid, "VmRSS")
        secs = t1 - t0
        return {
            "history": history,
            "procs": len(tree),
            "window_s": round(secs, 1),
            "mphang_cpu_pct": round(100.0 * (m1 - m0) / TICK / secs, 3),
            "tree_cpu_pct": round(100.0 * (tr1 - tr0) / TICK / secs, 3),
            "vm_hwm_kb": hwm,
            "vm_rss_kb": rss,
        }
    finally:
        for _ in range(2):
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                time.sleep(0.5)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        if tree:
            try:
                os.killpg(tree[0], signal.SIGKILL)
            except OSError:
                pass


def main():
    release = os.path.join(ROOT, "target", "release", "mphang")
    ap = argparse.ArgumentParser()
    ap.add_argument("--mphang", default=release if os.path.exists(release)
                    else os.path.join(ROOT, "target", "debug", "mphang"))
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--procs", type=int, default=64)
    ap.add_argument("--warmup", type=float, default=5)
    ap.add_argument("--window", type=float, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--timeout", default="60s",
                    help="run's --timeout; must outlast warm-up + window (a debug build opens "
                         "its 64 readers in about 30 s: --warmup 45 --timeout 120s)")
    args = ap.parse_args()
    print("# %s, %s, %d processes, %s" % (args.mphang, args.python, args.procs,
                                          time.strftime("%Y-%m-%d")), flush=True)
    for _ in range(args.rounds):
        for history in (True, False):
            print(json.dumps(one(args, history)), flush=True)


if __name__ == "__main__":
    main()

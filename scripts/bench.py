#!/usr/bin/env python3
"""Benchmark: mphang against py-spy and pystack on hung trees of 1 to 256 processes.

Usage: scripts/bench.py [--python PY] [--sizes 1,8,32,64,256] [--runs 5] [--mphang BIN]
                        [--pystack-max N]
       scripts/bench.py --stops [--runs 10] [--python PY] [--mphang BIN]
Build first: cargo build --release. py-spy and pystack are pip-installed into .bench-venv.
Prints a markdown table of medians (ms) for, in the same run on the same tree:
  mphang report --json --samples 1 --nonblocking   (the /proc + Python snapshot, nothing stopped)
  mphang report --json --samples 1                 (plus native stacks; longest stop per thread;
                                                    warm: native names kept from earlier runs)
  the same with MPHANG_CACHE_DIR=off               (cold: every symbol table loaded; its ms / MiB)
  mphang report --json                             (the default: native stacks and two looks)
  py-spy dump --pid ROOT --subprocesses [--native]
  pystack remote --native PID, once per process of the tree (it has no subprocess mode)
  reading the same /proc files from Python, one thread (the floor a look cannot go under)
and mphang's peak RSS (/usr/bin/time), and the size of the nonblocking --json report per
process. pystack runs only on trees of at most --pystack-max processes (default 64: it takes
about 130 ms per process). Per extra process: from the second size to the last (8 to 256).
Trees come from scripts/bench_tree.py.

--stops: the time each thread is held stopped for its native stack, under CPU load (trees from
scripts/bench_load.py: a busy Pool(8), and 16 spinning workers on this machine's CPUs), with
the stops done in mphang's ptrace helper (SCHED_FIFO when allowed; the default) and, for
comparison, on a thread of mphang itself (MPHANG_PTRACE_HELPER=off, the behaviour before the
helper). Per thread, over every thread of --runs reports: p50/p95/max of
  interrupt->detach: PTRACE_INTERRUPT to PTRACE_DETACH, an upper bound of the pause (it includes
                     the target's own wait for a CPU before it can stop);
  last check->detach: from the last look that found the thread not yet stopped: an upper bound
                     of the pause without the target's wait to reach the stop (the helper
                     looks at least every 250 µs; the in-process poller whenever it gets a CPU);
  stop->detach:      from the moment the stop was reported to PTRACE_DETACH: a lower bound, and
                     the pause itself when the tracer runs at SCHED_FIFO (MPHANG_TRACE_STOPS).
"""
import argparse, json, os, shutil, signal, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIME = "/usr/bin/time"


def timed(cmd, env=None):
    """Runs cmd; returns (ms, peak RSS MiB or None, stdout)."""
    use_time = os.path.exists(TIME)
    full = [TIME, "-f", "%M", "-o", "/tmp/mphang-bench-rss"] + cmd if use_time else cmd
    t0 = time.perf_counter()
    out = subprocess.run(full, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                         env=dict(os.environ, **(env or {}))).stdout
    ms = (time.perf_counter() - t0) * 1000
    rss = None
    if use_time:
        try:
            rss = int(open("/tmp/mphang-bench-rss").read().split()[-1]) / 1024.0
        except (OSError, ValueError, IndexError):
            pass
    return ms, rss, out


def read_proc(pids):
    """The floor: reads what a look reads of each process from /proc, in this process, one
    thread, nothing parsed (stat, status, cmdline, limits, maps; each fd's link and lstat; each
    thread's syscall, wchan, stat and schedstat). Returns ms."""
    t0 = time.perf_counter()
    for p in pids:
        for f in ("stat", "status", "cmdline", "limits", "maps"):
            try:
                with open("/proc/%d/%s" % (p, f), "rb") as fh:
                    fh.read()
            except OSError:
                pass
        d = "/proc/%d/fd/" % p
        try:
            fds = os.listdir(d)
        except OSError:
            fds = []
        for fd in fds:
            try:
                os.readlink(d + fd)
                os.lstat(d + fd)
            except OSError:
                pass
        try:
            tids = os.listdir("/proc/%d/task" % p)
        except OSError:
            tids = []
        for t in tids:
            for f in ("syscall", "wchan", "stat", "schedstat"):
                try:
                    with open("/proc/%d/task/%s/%s" % (p, t, f), "rb") as fh:
                        fh.read()
                except OSError:
                    pass
    return (time.perf_counter() - t0) * 1000


def venv_tools():
    venv = os.path.join(ROOT, ".bench-venv")
    bin_ = os.path.join(venv, "bin")
    if not os.path.exists(os.path.join(bin_, "pystack")):
        subprocess.check_call([sys.executable, "-m", "venv", venv])
        subprocess.check_call([os.path.join(bin_, "pip"), "install", "-q", "py-spy", "pystack"])
    return os.path.join(bin_, "py-spy"), os.path.join(bin_, "pystack")


def version(cmd):
    return subprocess.run(cmd + ["--version"], capture_output=True, text=True).stdout.strip()


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, len(v) * q // 100)] if v else 0


def stops(a):
    """--stops: per-thread stop times under load, helper against in-process."""
    print("%s; %s; %s; load %s; %d CPUs" % (
        time.strftime("%Y-%m-%d %H:%M"), version([a.mphang]), a.python,
        open("/proc/loadavg").read().split()[0], os.cpu_count()))
    print()
    print("| load | stops done by | threads stopped | interrupt->detach µs p50 / p95 / max | last check->detach µs p50 / p95 / max | stop->detach µs p50 / p95 / max |")
    print("|---|---|---|---|---|---|")
    for label, args in (("busy Pool(8)", ["pool", "8"]), ("16 spinning workers", ["spin", "16"])):
        ready = "/tmp/mphang-bench-load-%d.json" % os.getpid()
        if os.path.exists(ready):
            os.unlink(ready)
        tree = subprocess.Popen([a.python, os.path.join(ROOT, "scripts", "bench_load.py")] + args,
                                env=dict(os.environ, MPHANG_READY=ready), start_new_session=True)
        try:
            while not os.path.exists(ready):
                time.sleep(0.01)
            root = json.load(open(ready))["root"]
            time.sleep(1.0)  # let the load settle
            for who, env in (("helper (default)", {}), ("in-process (before)", {"MPHANG_PTRACE_HELPER": "off"})):
                log = "/tmp/mphang-bench-stops-%d.txt" % os.getpid()
                if os.path.exists(log):
                    os.unlink(log)
                for _ in range(a.runs):
                    subprocess.run([a.mphang, "report", str(root), "--samples", "1", "--json"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   env=dict(os.environ, MPHANG_TRACE_STOPS=log, **env))
                rows = [l.split() for l in open(log).read().splitlines() if l.strip()]
                total = [int(r[0]) for r in rows]
                after = [int(r[1]) for r in rows]
                since = [int(r[2]) for r in rows]
                cell = lambda v: "%d / %d / %d" % (pct(v, 50), pct(v, 95), max(v or [0]))
                print("| %s | %s | %d | %s | %s | %s |" % (
                    label, who, len(rows), cell(total), cell(since), cell(after)))
        finally:
            os.killpg(tree.pid, signal.SIGKILL)
            tree.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=shutil.which("python3"))
    ap.add_argument("--sizes", default="1,8,32,64,256")
    ap.add_argument("--pystack-max", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mphang", default=os.path.join(ROOT, "target/release/mphang"))
    ap.add_argument("--stops", action="store_true")
    a = ap.parse_args()
    if a.stops:
        return stops(a)
    pyspy, pystack = venv_tools()
    pyver = subprocess.run([a.python, "-c", "import platform;print(platform.python_version())"],
                           capture_output=True, text=True).stdout.strip()
    print("%s; %s; %s; pystack %s; CPython %s; %s" % (
        time.strftime("%Y-%m-%d"), version([a.mphang]), version([pyspy]), version([pystack]),
        pyver, open("/proc/loadavg").read().split()[0] + " load"))
    print()
    print("| processes | mphang nonblocking | mphang native | mphang native, cold (ms / MiB) | mphang default (2 looks) | longest stop µs | mphang peak MiB (warm) | JSON KiB per process | py-spy dump | py-spy dump --native | pystack --native (all pids) | /proc floor |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = []
    for n in [int(x) for x in a.sizes.split(",")]:
        ready = "/tmp/mphang-bench-ready-%d.json" % os.getpid()
        if os.path.exists(ready):
            os.unlink(ready)
        tree = subprocess.Popen([a.python, os.path.join(ROOT, "scripts", "bench_tree.py"), str(n)],
                                env=dict(os.environ, MPHANG_READY=ready), start_new_session=True)
        try:
            while not os.path.exists(ready):
                time.sleep(0.01)
            info = json.load(open(ready))
            root, pids = info["root"], [info["root"]] + info["pids"]
            col = {k: [] for k in ("nb", "nat", "cold", "cold_rss", "two", "kib", "stop", "rss", "ps", "psn", "pst", "floor")}
            for _ in range(a.runs):
                ms, rss, out = timed([a.mphang, "report", str(root), "--json", "--samples", "1", "--nonblocking"])
                col["nb"].append(ms); col["rss"].append(rss or 0)
                seen = len(json.loads(out)["snapshot"]["processes"])
                col["kib"].append(len(out) / 1024.0 / max(1, seen))
                ms, rss, out = timed([a.mphang, "report", str(root), "--json", "--samples", "1"])
                col["nat"].append(ms); col["rss"].append(rss or 0)
                col["stop"].append(json.loads(out)["snapshot"].get("max_stop_us") or 0)
                ms, rss, out = timed([a.mphang, "report", str(root), "--json", "--samples", "1"],
                                     env={"MPHANG_CACHE_DIR": "off"})
                col["cold"].append(ms); col["cold_rss"].append(rss or 0)
                ms, rss, out = timed([a.mphang, "report", str(root), "--json"])
                col["two"].append(ms); col["rss"].append(rss or 0)
                col["ps"].append(timed([pyspy, "dump", "--pid", str(root), "--subprocesses"])[0])
                col["psn"].append(timed([pyspy, "dump", "--pid", str(root), "--subprocesses", "--native"])[0])
                col["floor"].append(read_proc(pids))
            for _ in range(max(1, a.runs // 2) if n <= a.pystack_max else 0):
                col["pst"].append(sum(timed([pystack, "remote", "--native", str(p)])[0] for p in pids))
            med = statistics.median
            print("| %d (%d seen) | %.0f | %.0f | %.0f / %.1f | %.0f | %.0f | %.1f | %.1f | %.0f | %.0f | %s | %.0f |" % (
                n, seen, med(col["nb"]), med(col["nat"]), med(col["cold"]), max(col["cold_rss"]),
                med(col["two"]), max(col["stop"]),
                max(col["rss"]), med(col["kib"]), med(col["ps"]), med(col["psn"]),
                "%.0f" % med(col["pst"]) if col["pst"] else "-", med(col["floor"])))
            rows.append((n, med(col["nb"]), med(col["nat"]), med(col["ps"]), med(col["psn"]),
                         med(col["floor"])))
        finally:
            os.killpg(tree.pid, signal.SIGKILL)
            tree.wait()
    for (n0, a0, b0, _, _, f0), (n1, a1, b1, _, _, f1) in zip(rows, rows[1:]):
        print("  %d to %d: mphang nonblocking %.2f ms per extra process, native %.2f, /proc floor %.2f"
              % (n0, n1, (a1 - a0) / (n1 - n0), (b1 - b0) / (n1 - n0), (f1 - f0) / (n1 - n0)))
    if len(rows) >= 2:
        (n0, a0, b0, c0, d0, _), (n1, a1, b1, c1, d1, _) = rows[1 if len(rows) > 2 else 0], rows[-1]
        k = float(n1 - n0)
        print()
        print("per extra process from %d to %d (ms): mphang nonblocking" % (n0, n1) + " %.2f, mphang native %.2f, py-spy %.2f, py-spy --native %.2f"
              % ((a1 - a0) / k, (b1 - b0) / k, (c1 - c0) / k, (d1 - d0) / k))


if __name__ == "__main__":
    main()

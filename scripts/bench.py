#!/usr/bin/env python3
"""Benchmark: mphang against py-spy and pystack on hung trees of 1 to 64 processes.

Usage: scripts/bench.py [--python PY] [--sizes 1,8,32,64] [--runs 5] [--mphang BIN]
Build first: cargo build --release. py-spy and pystack are pip-installed into .bench-venv.
Prints a markdown table of medians (ms) for, in the same run on the same tree:
  mphang report --json --samples 1 --nonblocking   (the /proc + Python snapshot, nothing stopped)
  mphang report --json --samples 1                 (plus native stacks; longest stop per thread)
  py-spy dump --pid ROOT --subprocesses [--native]
  pystack remote --native PID, once per process of the tree (it has no subprocess mode)
and mphang's peak RSS (/usr/bin/time). Trees come from scripts/bench_tree.py.
"""
import argparse, json, os, shutil, signal, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIME = "/usr/bin/time"


def timed(cmd):
    """Runs cmd; returns (ms, peak RSS MiB or None, stdout)."""
    use_time = os.path.exists(TIME)
    full = [TIME, "-f", "%M", "-o", "/tmp/mphang-bench-rss"] + cmd if use_time else cmd
    t0 = time.perf_counter()
    out = subprocess.run(full, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
    ms = (time.perf_counter() - t0) * 1000
    rss = None
    if use_time:
        try:
            rss = int(open("/tmp/mphang-bench-rss").read().split()[-1]) / 1024.0
        except (OSError, ValueError, IndexError):
            pass
    return ms, rss, out


def venv_tools():
    venv = os.path.join(ROOT, ".bench-venv")
    bin_ = os.path.join(venv, "bin")
    if not os.path.exists(os.path.join(bin_, "pystack")):
        subprocess.check_call([sys.executable, "-m", "venv", venv])
        subprocess.check_call([os.path.join(bin_, "pip"), "install", "-q", "py-spy", "pystack"])
    return os.path.join(bin_, "py-spy"), os.path.join(bin_, "pystack")


def version(cmd):
    return subprocess.run(cmd + ["--version"], capture_output=True, text=True).stdout.strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=shutil.which("python3"))
    ap.add_argument("--sizes", default="1,8,32,64")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mphang", default=os.path.join(ROOT, "target/release/mphang"))
    a = ap.parse_args()
    pyspy, pystack = venv_tools()
    pyver = subprocess.run([a.python, "-c", "import platform;print(platform.python_version())"],
                           capture_output=True, text=True).stdout.strip()
    print("%s; %s; %s; pystack %s; CPython %s; %s" % (
        time.strftime("%Y-%m-%d"), version([a.mphang]), version([pyspy]), version([pystack]),
        pyver, open("/proc/loadavg").read().split()[0] + " load"))
    print()
    print("| processes | mphang nonblocking | mphang native | longest stop µs | mphang peak MiB | py-spy dump | py-spy dump --native | pystack --native (all pids) |")
    print("|---|---|---|---|---|---|---|---|")
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
            col = {k: [] for k in ("nb", "nat", "stop", "rss", "ps", "psn", "pst")}
            for _ in range(a.runs):
                ms, rss, out = timed([a.mphang, "report", str(root), "--json", "--samples", "1", "--nonblocking"])
                col["nb"].append(ms); col["rss"].append(rss or 0)
                seen = len(json.loads(out)["snapshot"]["processes"])
                ms, rss, out = timed([a.mphang, "report", str(root), "--json", "--samples", "1"])
                col["nat"].append(ms); col["rss"].append(rss or 0)
                col["stop"].append(json.loads(out)["snapshot"].get("max_stop_us") or 0)
                col["ps"].append(timed([pyspy, "dump", "--pid", str(root), "--subprocesses"])[0])
                col["psn"].append(timed([pyspy, "dump", "--pid", str(root), "--subprocesses", "--native"])[0])
            for _ in range(max(1, a.runs // 2)):
                col["pst"].append(sum(timed([pystack, "remote", "--native", str(p)])[0] for p in pids))
            med = statistics.median
            print("| %d (%d seen) | %.0f | %.0f | %.0f | %.1f | %.0f | %.0f | %.0f |" % (
                n, seen, med(col["nb"]), med(col["nat"]), max(col["stop"]), max(col["rss"]),
                med(col["ps"]), med(col["psn"]), med(col["pst"])))
            rows.append((n, med(col["nb"]), med(col["nat"]), med(col["ps"]), med(col["psn"])))
        finally:
            os.killpg(tree.pid, signal.SIGKILL)
            tree.wait()
    if len(rows) >= 2:
        (n0, a0, b0, c0, d0), (n1, a1, b1, c1, d1) = rows[0], rows[-1]
        k = float(n1 - n0)
        print()
        print("per extra process (ms): mphang nonblocking %.2f, mphang native %.2f, py-spy %.2f, py-spy --native %.2f"
              % ((a1 - a0) / k, (b1 - b0) / k, (c1 - c0) / k, (d1 - d0) / k))


if __name__ == "__main__":
    main()

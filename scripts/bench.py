#!/usr/bin/env python3
"""Benchmark: `mphang report --json` against `py-spy dump --subprocesses` on hung trees.

Usage: scripts/bench.py [--python PY] [--sizes 1,8,32,64] [--runs 7] [--mphang BIN] [--pyspy BIN]
Builds nothing: pass a release binary (cargo build --release). Installs py-spy into
.bench-venv with pip if no --pyspy is given. Prints a markdown table of medians.
"""
import argparse, json, os, shutil, signal, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def timed(cmd):
    """Runs cmd, returns (seconds, peak RSS in MiB, exit code, stdout)."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    out = p.stdout.read()
    _, status, ru = os.wait4(p.pid, 0)
    dt = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else status
    return dt, ru.ru_maxrss / 1024.0, p.returncode, out


def pyspy_bin(args):
    if args.pyspy:
        return args.pyspy
    venv = os.path.join(ROOT, ".bench-venv")
    exe = os.path.join(venv, "bin", "py-spy")
    if not os.path.exists(exe):
        subprocess.check_call([sys.executable, "-m", "venv", venv])
        subprocess.check_call([os.path.join(venv, "bin", "pip"), "install", "-q", "py-spy"])
    return exe


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=shutil.which("python3"))
    ap.add_argument("--sizes", default="1,8,32,64")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--mphang", default=os.path.join(ROOT, "target/release/mphang"))
    ap.add_argument("--pyspy")
    a = ap.parse_args()
    pyspy = pyspy_bin(a)
    ver = subprocess.run([a.python, "-c", "import platform;print(platform.python_version())"],
                         capture_output=True, text=True).stdout.strip()
    print("python %s, %s, py-spy %s" % (ver, subprocess.run([a.mphang, "--version"], capture_output=True, text=True).stdout.strip(),
                                        subprocess.run([pyspy, "--version"], capture_output=True, text=True).stdout.strip()))
    print()
    print("| processes | mphang snapshot (1 look) ms | mphang collect_ms | mphang peak MiB | py-spy dump --subprocesses ms | py-spy peak MiB | mphang report (2 looks) ms |")
    print("|---|---|---|---|---|---|---|")
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
            root = json.load(open(ready))["root"]
            m, mm, cm, ps, pm, full = [], [], [], [], [], []
            for _ in range(a.runs):
                dt, rss, code, out = timed([a.mphang, "report", str(root), "--json", "--samples", "1"])
                m.append(dt * 1000); mm.append(rss)
                cm.append(json.loads(out)["snapshot"]["collect_ms"])
                nprocs = len(json.loads(out)["snapshot"]["processes"])
                dt, rss, code, out = timed([pyspy, "dump", "--pid", str(root), "--subprocesses"])
                ps.append(dt * 1000); pm.append(rss)
            dt, _, _, _ = timed([a.mphang, "report", str(root), "--json"])
            full.append(dt * 1000)
            med = statistics.median
            print("| %d (%d seen) | %.1f | %.0f | %.1f | %.1f | %.1f | %.0f |" % (
                n, nprocs, med(m), med(cm), max(mm), med(ps), max(pm), med(full)))
            rows.append((n, med(m), med(ps)))
        finally:
            os.killpg(tree.pid, signal.SIGKILL)
            tree.wait()
    if len(rows) >= 2:
        (n0, m0, p0), (n1, m1, p1) = rows[0], rows[-1]
        print()
        print("per extra process: mphang %.2f ms, py-spy %.2f ms" % ((m1 - m0) / (n1 - n0), (p1 - p0) / (n1 - n0)))


if __name__ == "__main__":
    main()

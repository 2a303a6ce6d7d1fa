#!/usr/bin/env python3
"""Benchmark: `mphang merge` of many per-host reports (issue 15: 64 reports of 64 processes
each in under 1 s).

Usage: scripts/bench_merge.py [--python PY] [--hosts 64] [--procs 64] [--runs 5] [--mphang BIN]
                              [--keep DIR]
Build first: cargo build --release. Takes one real report of a hung tree of --procs processes
(scripts/bench_tree.py; `mphang report --json`, native stacks and two looks, as a node would
send it), then writes --hosts copies as different hosts (own hostname, boot id, PID namespace
and address) whose root threads wait in recv on a TCP ring through every host, so the merge
matches one connection per host and proves a cycle across all of them. Prints the medians (ms)
of `mphang merge --json` and of the text output, wall and CPU (user + system: the machine is
shared, so wall time depends on the load printed in the first line), the peak RSS, and the
input size.
"""
import argparse, copy, json, os, shutil, signal, statistics, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIME = "/usr/bin/time"


def timed(cmd):
    """Runs cmd; returns (wall ms, CPU ms (user + system), peak RSS MiB, stdout)."""
    t0 = time.perf_counter()
    out = subprocess.run([TIME, "-f", "%U %S %M", "-o", "/tmp/mphang-bench-merge-time"] + cmd,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout
    wall = (time.perf_counter() - t0) * 1000
    user, system, rss = open("/tmp/mphang-bench-merge-time").read().split()[-3:]
    return wall, (float(user) + float(system)) * 1000, int(rss) / 1024.0, out


def one_report(python, mphang, n):
    ready = "/tmp/mphang-bench-merge-ready-%d.json" % os.getpid()
    if os.path.exists(ready):
        os.unlink(ready)
    tree = subprocess.Popen([python, os.path.join(ROOT, "scripts", "bench_tree.py"), str(n)],
                            env=dict(os.environ, MPHANG_READY=ready), start_new_session=True)
    try:
        while not os.path.exists(ready):
            time.sleep(0.01)
        root = json.load(open(ready))["root"]
        out = subprocess.run([mphang, "report", str(root), "--json"], stdout=subprocess.PIPE).stdout
        return json.loads(out)
    finally:
        os.killpg(tree.pid, signal.SIGKILL)
        tree.wait()


def addr(h):
    return "10.88.%d.%d" % (h // 250, h % 250 + 1)


def tcp_fd(fd, inode, local, remote, acked, received):
    return {"fd": fd, "access": "read_write", "kind": {
        "kind": "socket", "inode": inode,
        "tcp": {"state": "established", "local": local, "remote": remote, "rqueue": 0,
                "wqueue": 0, "bytes_acked": acked, "bytes_received": received}}}


def as_host(report, h, hosts):
    r = copy.deepcopy(report)
    s = r["snapshot"]
    ns = 4026540000 + h
    s["hosts"] = [{"hostname": "node-%03d" % h, "boot_id": "boot-%03d" % h, "pid_ns": 1000 + h,
                   "net_ns": [{"inode": ns, "addrs": ["127.0.0.1", addr(h)]}]}]
    for p in s["processes"]:
        p["net_ns"] = ns
    root = next(p for p in s["processes"] if p["pid"] == s["root"])
    nxt, prev = (h + 1) % hosts, (h - 1) % hosts
    # fd 900: this host's client connection to the next host's port 29500 (the active opener
    # counts its SYN); fd 901: the previous host's connection, accepted here.
    # Children written as the root's fds (`fds_as`) must not gain its two sockets.
    for p in s["processes"]:
        if (p.get("fds_as") or {}).get("pid") == root["pid"]:
            p["fds_as"].setdefault("without", []).extend([900, 901])
    root["fds"].append(tcp_fd(900, 990001, "%s:%d" % (addr(h), 40000 + h), "%s:29500" % addr(nxt), 11, 5))
    root["fds"].append(tcp_fd(901, 990002, "%s:29500" % addr(h), "%s:%d" % (addr(prev), 40000 + prev), 5, 10))
    main = next(t for t in root["threads"] if t["tid"] == s["root"])
    main["syscall"] = {"kind": "blocked", "nr": 45, "name": "recvfrom", "args": [900, 0, 0, 0, 0, 0],
                       "sp": 0, "pc": 0, "decoded": {"call": "read", "fd": 900}}
    main["state"] = "S"
    for look in main.get("later", []):
        look["syscall"] = [45, 900, 0, 0]
        look["cpu_ticks"] = main["cpu_ticks"]
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=shutil.which("python3"))
    ap.add_argument("--hosts", type=int, default=64)
    ap.add_argument("--procs", type=int, default=64)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mphang", default=os.path.join(ROOT, "target/release/mphang"))
    ap.add_argument("--keep", metavar="DIR", help="write the reports to DIR and keep them")
    a = ap.parse_args()
    base = one_report(a.python, a.mphang, a.procs)
    seen = len(base["snapshot"]["processes"])
    if a.keep:
        os.makedirs(a.keep, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mphang-bench-merge-") as tmp:
        d = a.keep or tmp
        files = []
        for h in range(a.hosts):
            path = os.path.join(d, "node-%03d.json" % h)
            with open(path, "w") as f:
                json.dump(as_host(base, h, a.hosts), f)
            files.append(path)
        size = sum(os.path.getsize(f) for f in files) / 1e6
        js, txt, js_cpu, txt_cpu, rss = [], [], [], [], []
        for _ in range(a.runs):
            ms, cpu, mib, out = timed([a.mphang, "merge", "--json"] + files)
            js.append(ms); js_cpu.append(cpu); rss.append(mib)
            ms, cpu, mib, _ = timed([a.mphang, "merge", "--color", "never"] + files)
            txt.append(ms); txt_cpu.append(cpu); rss.append(mib)
        merged = json.loads(out)
    findings = [f["pattern"] for f in merged["findings"]]
    print("%s; %s; CPython report of %d processes; load %s" % (
        time.strftime("%Y-%m-%d %H:%M"), subprocess.run([a.mphang, "--version"], capture_output=True,
                                                        text=True).stdout.strip(),
        seen, open("/proc/loadavg").read().split()[0]))
    print()
    med = statistics.median
    kinds = sorted(set(findings))
    print("| reports x processes | input MB | merge --json wall / CPU ms | merge (text) wall / CPU ms | peak MiB | processes merged | findings |")
    print("|---|---|---|---|---|---|---|")
    print("| %d x %d | %.1f | %.0f / %.0f | %.0f / %.0f | %.1f | %d | %s |" % (
        a.hosts, seen, size, med(js), med(js_cpu), med(txt), med(txt_cpu), max(rss),
        len(merged["snapshot"]["processes"]),
        ", ".join("%d %s" % (findings.count(k), k) for k in kinds) or "none"))


if __name__ == "__main__":
    main()

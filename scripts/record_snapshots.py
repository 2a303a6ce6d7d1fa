#!/usr/bin/env python3
"""Record replay snapshots: run fixtures, wait until hung, save `mphang report --save`.

Usage: scripts/record_snapshots.py [--python PATH] [--mphang PATH] [--start-method M]
                                   [--suffix S] [--env K=V]... [--as NAME] FIXTURE...
Writes fixtures/snapshots/<fixture><S>.json (e.g. --suffix _forkserver; or <NAME>.json with
--as, for one fixture). The start method (MPHANG_START_METHOD) defaults to the Python's own;
--env sets variables for the fixture (e.g. MPHANG_NOISE=1). Paths under the repository are
rewritten to /src/... so that rendering never reads the files (the output is the same on
every machine).
"""
import argparse, contextlib, json, os, signal, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def syscall(pid, tid):
    try:
        return int(open("/proc/%d/task/%d/syscall" % (pid, tid)).read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def met(pid, tid, nrs):
    if tid:
        return syscall(pid, tid) in nrs
    try:
        return any(syscall(pid, int(t)) in nrs for t in os.listdir("/proc/%d/task" % pid))
    except OSError:
        return False


def gone(pid):
    try:
        return open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@contextlib.contextmanager
def hung(python, fixture, method=None, env=()):
    """Starts fixtures/<fixture>.py in its own session, waits until its ready file's
    expectations hold, yields its pid, and kills its process group afterwards, also when this
    script is ended by SIGTERM or SIGHUP (`timeout`, a closed terminal): those become
    SystemExit, so the cleanup below runs instead of leaving the tree alive."""
    def end(signum, _frame):
        raise SystemExit(128 + signum)
    previous = {sig: signal.signal(sig, end) for sig in (signal.SIGTERM, signal.SIGHUP)}
    ready = "/tmp/mphang-record-%s.json" % fixture
    if os.path.exists(ready):
        os.unlink(ready)
    extra = dict(kv.split("=", 1) for kv in env)
    if method:
        extra["MPHANG_START_METHOD"] = method
    p = subprocess.Popen([python, os.path.join(ROOT, "fixtures", fixture + ".py")],
                         env=dict(os.environ, MPHANG_READY=ready, **extra),
                         start_new_session=True,
                         stdout=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while time.time() < deadline:
            if os.path.exists(ready):
                r = json.load(open(ready))
                if all(met(*b) for b in r["blocked"]) and all(gone(g) for g in r["gone"]):
                    break
            time.sleep(0.01)
        else:
            sys.exit("%s: not ready" % fixture)
        yield p.pid
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--python", default=os.path.expanduser("~/.pyenv/versions/3.11.7/bin/python3"))
    ap.add_argument("--mphang", default=os.path.join(ROOT, "target/debug/mphang"))
    ap.add_argument("--start-method", default=None)
    ap.add_argument("--suffix", default="")
    ap.add_argument("--env", action="append", default=[], help="K=V for the fixture")
    ap.add_argument("--as", dest="as_name", help="snapshot name (one fixture only)")
    ap.add_argument("fixtures", nargs="+")
    a = ap.parse_args()
    for kv in a.env:
        k, v = kv.split("=", 1)
        os.environ[k] = v
    for name in a.fixtures:
        with hung(a.python, name, a.start_method, a.env) as pid:
            out = os.path.join(ROOT, "fixtures", "snapshots", (a.as_name or name + a.suffix) + ".json")
            subprocess.run([a.mphang, "report", str(pid), "--save", out, "--json"],
                           stdout=subprocess.DEVNULL, check=False)
            text = open(out).read().replace(ROOT + "/", "/src/")
            open(out, "w").write(text)
            print("recorded", out)

if __name__ == "__main__":
    main()

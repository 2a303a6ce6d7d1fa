#!/usr/bin/env python3
"""Churn: many reports of healthy but busy programs; none may find a hang.

Usage: scripts/churn.py [--n 500] [--python PATH] [--mphang PATH] [--noise] [FIXTURE ...]
Default fixtures: neg_pool_churn (Pool(8, maxtasksperchild=1), tiny tasks), neg_spinners
(16 spinning workers) and neg_pipeline (producer -> workers -> collector). Each is started
once and reported on N times in a row (`mphang report --json`); every report with a finding
of severity "hang" (or exit code 1) is a false alarm: its patterns are printed and the
snapshot kept under /tmp. Prints per fixture: reports, false alarms, warnings, seconds.
Exit status 1 if any false alarm. Run with a release build (cargo build --release).
"""
import argparse, collections, json, os, signal, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from record_snapshots import hung  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--python", default=os.path.expanduser("~/.pyenv/versions/3.11.7/bin/python3"))
    ap.add_argument("--mphang", default=os.path.join(ROOT, "target/release/mphang"))
    ap.add_argument("--noise", action="store_true", help="MPHANG_NOISE=1 in the programs")
    ap.add_argument("fixtures", nargs="*", default=["neg_pool_churn", "neg_spinners", "neg_pipeline"])
    a = ap.parse_args()
    if a.noise:
        os.environ["MPHANG_NOISE"] = "1"
    os.environ.setdefault("MPHANG_FIXTURE_TIMEOUT", "7200")
    bad = 0
    for name in a.fixtures:
        alarms, warnings, started = 0, collections.Counter(), time.time()
        with hung(a.python, name) as pid:
            for i in range(a.n):
                out = subprocess.run([a.mphang, "report", str(pid), "--json"],
                                     capture_output=True, text=True)
                try:
                    rep = json.loads(out.stdout)
                except ValueError:
                    sys.exit("%s #%d: no report (exit %d): %s; the program died?"
                             % (name, i, out.returncode, out.stderr.strip()))
                hangs = [f["pattern"] for f in rep["findings"] if f["severity"] == "hang"]
                for f in rep["findings"]:
                    if f["severity"] != "hang":
                        warnings[f["pattern"]] += 1
                if hangs or out.returncode == 1:
                    alarms += 1
                    keep = "/tmp/mphang-churn-%s-%d.json" % (name, i)
                    with open(keep, "w") as f:
                        f.write(out.stdout)
                    print("%s #%d: FALSE ALARM %s (report kept in %s)" % (name, i, hangs, keep))
        bad += alarms
        print("%-16s reports %d  false alarms %d  warnings %s  %.0f s"
              % (name, a.n, alarms, dict(warnings) or 0, time.time() - started))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

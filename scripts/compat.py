#!/usr/bin/env python3
"""Write docs/compatibility.md: every live fixture on every CPython and start method.

    python3 scripts/compat.py                  # runs the full matrix, then writes the table
    python3 scripts/compat.py OUT.jsonl [...]  # only writes the table from recorded outcomes;
                                               # a later file's outcome of the same fixture,
                                               # Python and method replaces an earlier one

The run is the live test suite with every start method on every Python
(``MPHANG_TEST_FULL=1``), each outcome appended to a JSON-lines file
(``MPHANG_COMPAT_OUT``, see tests/integration/util.rs). A cell is ``ok`` when mphang named
the fixture's exact pattern, its processes and culprit line (or stayed quiet, for a negative
control), ``FAIL`` otherwise; ``-`` where the start method does not apply (a fork-only
fixture) or the Python was not found. The default start method of each version is marked
with ``*``.
"""
import collections
import datetime
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
OUT = os.path.join(REPO, "docs", "compatibility.md")
METHODS = ["fork", "spawn", "forkserver"]


def run_matrix(path):
    env = dict(os.environ, MPHANG_TEST_FULL="1", MPHANG_COMPAT_OUT=path)
    env.pop("MPHANG_TEST_PYTHONS", None)
    env.pop("MPHANG_TEST_METHODS", None)
    cmd = ["cargo", "test", "--test", "integration", "live::", "--", "--test-threads=2"]
    print("running:", " ".join(cmd), file=sys.stderr)
    return subprocess.call(cmd, cwd=REPO, env=env)


def declared(fixture):
    """The fixture's `Start methods:` docstring line: a list, [] for `any`, None for all."""
    try:
        with open(os.path.join(REPO, "fixtures", fixture + ".py")) as f:
            head = f.read(4000)
    except OSError:
        return None
    for line in head.splitlines():
        if line.strip().startswith("Start methods:"):
            names = line.split(":", 1)[1].split("(")[0]
            return [m.strip() for m in names.split(",") if m.strip() in METHODS]
    return None


def table(lines):
    latest = {}
    for l in lines:
        if l.strip():
            r = json.loads(l)
            latest[(r["fixture"], r["minor"], r["method"])] = r
    rows = list(latest.values())
    versions = {}
    for r in rows:
        versions[r["minor"]] = r["version"]
    minors = sorted(versions)
    cells = collections.defaultdict(dict)
    expect = {}
    default = {}
    for r in rows:
        # No multiprocessing child: one row, run under each version's default method.
        method = "(any)" if declared(r["fixture"]) == [] else r["method"]
        key = (r["fixture"], method)
        default[(r["fixture"], method, r["minor"])] = r.get("default", False)
        expect[r["fixture"]] = r["expect"]
        cells[key][r["minor"]] = (r["ok"], r.get("error"))
    fixtures = sorted(expect)
    out = []
    ok = sum(1 for r in rows if r["ok"])
    out.append("# Compatibility: CPython versions and start methods\n")
    out.append(
        "Produced by `python3 scripts/compat.py` (every live fixture, every start method it "
        "applies to, every CPython found; %s). Do not edit by hand.\n"
        % datetime.date.today().isoformat()
    )
    out.append(
        "A cell is **ok** when `mphang report` named the fixture's exact pattern, its "
        "processes and culprit line (negative controls: no finding, exit 0), **FAIL** "
        "otherwise, `-` where the start method does not apply (fixtures that only exist "
        "under one method say so in their docstring: `Start methods:`). `*` marks each "
        "version's default start method on Linux (fork up to 3.13, forkserver from 3.14). "
        "Fixtures without a multiprocessing child (`(any)`) run once per version, under its "
        "default.\n"
    )
    out.append(
        "Interpreters: %s. 3.8-3.13 are pyenv builds (shared libpython with symbols); 3.14 "
        "and 3.15 are Debian sid builds (static libpython, stripped), installed by "
        "`scripts/get-cpython.sh`. Free-threaded builds (3.14t) are recognised and reported "
        "from /proc only (see README); none is installable here to test.\n"
        % ", ".join(versions[m] for m in minors)
    )
    out.append("Result: %d of %d runs ok.\n" % (ok, len(rows)))
    head = "| fixture | expected | method | " + " | ".join("3.%d" % m for m in minors) + " |"
    out.append(head)
    out.append("|" + "---|" * (3 + len(minors)))
    failures = []
    for f in fixtures:
        for method in METHODS + ["(any)"]:
            c = cells.get((f, method))
            if not c:
                continue
            row = ["`%s`" % f, "`%s`" % expect[f], method]
            for m in minors:
                if m not in c:
                    row.append("-")
                    continue
                good, err = c[m]
                mark = "*" if default.get((f, method, m)) and method != "(any)" else ""
                row.append(("ok" if good else "**FAIL**") + mark)
                if not good:
                    failures.append("- `%s` on %s/%s: %s" % (f, versions[m], method, err or "?"))
            out.append("| " + " | ".join(row) + " |")
    if failures:
        out.append("\n## Failures\n")
        out.extend(failures)
    return "\n".join(out) + "\n"


def main():
    paths = sys.argv[1:]
    if not paths:
        fd, path = tempfile.mkstemp(suffix=".jsonl", prefix="mphang-compat-")
        os.close(fd)
        run_matrix(path)
        paths = [path]
    lines = []
    for path in paths:
        with open(path) as f:
            lines += f.readlines()
    text = table(lines)
    with open(OUT, "w") as f:
        f.write(text)
    print("wrote", OUT, file=sys.stderr)


if __name__ == "__main__":
    main()

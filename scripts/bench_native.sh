#!/bin/sh
# Times mphang's native sampler (collect::native::sample) on trees of 1, 8, 32 and 64 forked
# Python processes, next to `py-spy dump --native --subprocesses`, and measures the pause a
# Python loop sees while it is sampled 100 times. Release build; needs root (ptrace).
#
#   scripts/bench_native.sh            # sizes 1,8,32,64
#   MPHANG_BENCH_SIZES=1,8 scripts/bench_native.sh
#   MPHANG_PYSPY=/path/to/py-spy scripts/bench_native.sh
#
# py-spy comes from a venv: python3 -m venv /work/venv-bench && /work/venv-bench/bin/pip install py-spy
# The build runs under `nice`; the measurements do not (a niced sampler gets preempted while it
# holds a thread stopped, which inflates the pause).
set -eu
cd "$(dirname "$0")/.."
date -u '+%Y-%m-%d %H:%M UTC'
echo "kernel $(uname -r), $(nproc) CPUs, load: $(cut -d' ' -f1-3 /proc/loadavg)"
nice cargo test --release --test integration --no-run >/dev/null 2>&1
cargo test --release --test integration -- --ignored --exact native::perf::bench_tree --nocapture --test-threads=1 2>&1 \
    | grep -E '^\|'
cargo test --release --test integration -- --ignored --exact native::perf::pause_seen_by_target_one_at_a_time native::perf::pause_seen_by_target_all_at_once --nocapture --test-threads=1 2>&1 \
    | grep -E '^pause\['
cargo test --release --test integration -- --ignored --exact native::perf::pause_with_many_threads native::perf::pause_seen_by_target_under_py_spy --nocapture --test-threads=1 2>&1 \
    | grep -E '^pause\['

"""Loaded trees for `scripts/bench.py --stops`: the stop time per thread under CPU load.

usage: bench_load.py pool N | spin N   (MPHANG_READY=path.json)

  pool N   a multiprocessing Pool(N) working through CPU-bound tasks (imap), main waiting for
           results: the "busy Pool"
  spin N   N forked children spinning in pure Python, the parent joining them: with N=16 on a
           2-CPU machine every thread waits for a CPU most of the time

Writes {"root": pid, "pids": [...]} to MPHANG_READY once every worker is running; then runs
until killed (an alarm ends it after 10 minutes).
"""
import json, multiprocessing as mp, os, signal, sys, time


def crunch(seed):
    end = time.process_time() + 0.3
    x = seed
    while time.process_time() < end:
        for _ in range(1000):
            x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def spin():
    signal.alarm(600)
    x = 0
    while True:
        x += 1


def ready(pids):
    path = os.environ.get("MPHANG_READY")
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump({"root": os.getpid(), "pids": pids}, f)
        os.rename(path + ".tmp", path)


def main():
    signal.alarm(600)
    mode, n = sys.argv[1], int(sys.argv[2])
    ctx = mp.get_context("fork")
    if mode == "pool":
        with ctx.Pool(n) as pool:
            for i, _ in enumerate(pool.imap(crunch, range(100000))):
                if i == 0:
                    ready([w.pid for w in pool._pool])
    else:
        kids = [ctx.Process(target=spin) for _ in range(n)]
        for k in kids:
            k.start()
        ready([k.pid for k in kids])
        kids[0].join()


if __name__ == "__main__":
    main()

"""A hung tree of N processes for the benchmark: the parent forks N-1 children that each block
in q.get() on a queue nobody writes, then joins them. Writes MPHANG_READY when every child is
blocked in read(2) or on the queue's lock (so the tree is quiet), then blocks in join()."""
import json, multiprocessing as mp, os, signal, sys, time


def child(q):
    signal.alarm(600)
    q.get()


def main():
    n = int(sys.argv[1])
    signal.alarm(600)
    q = mp.get_context("fork").Queue()
    kids = [mp.get_context("fork").Process(target=child, args=(q,)) for _ in range(n - 1)]
    for k in kids:
        k.start()

    def quiet(pid):
        try:
            return open("/proc/%d/syscall" % pid).read().split()[0] in ("0", "202")
        except OSError:
            return False

    while not all(quiet(k.pid) for k in kids):
        time.sleep(0.01)
    path = os.environ.get("MPHANG_READY")
    if path:
        with open(path + ".tmp", "w") as f:
            json.dump({"root": os.getpid(), "pids": [k.pid for k in kids]}, f)
        os.rename(path + ".tmp", path)
    if kids:
        kids[0].join()
    else:
        q.get()


if __name__ == "__main__":
    main()

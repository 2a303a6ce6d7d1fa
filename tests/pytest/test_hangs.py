"""A pytest session for the mphang plugin's tests (tests/integration/pytest_plugin.rs runs it;
it is not part of any other test suite): a multiprocessing test that hangs, the
join-before-drain shape of fixtures/join_before_drain.py, between two quick tests.

Every process appends "<role> <pid>" to $MPHANG_PIDS so the harness can check that nothing is
left running, and arms alarm() so nothing outlives a crashed harness either.
"""

import multiprocessing as mp
import os
import signal


def note(role):
    path = os.environ.get("MPHANG_PIDS")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.write(fd, ("%s %d\n" % (role, os.getpid())).encode())
        os.close(fd)


def producer(q):
    signal.alarm(120)
    note("child")
    for _ in range(40):
        q.put(b"x" * 3000)  # 120 KB: the feeder blocks on the full pipe, the child cannot exit


def test_before():
    note("pytest")


def test_join_before_drain():
    q = mp.get_context("fork").Queue()
    p = mp.get_context("fork").Process(target=producer, args=(q,))
    p.start()
    p.join()  # CULPRIT: joins before draining the queue the child filled
    assert len([q.get() for _ in range(40)]) == 40


def test_after():
    assert sum(range(10)) == 45

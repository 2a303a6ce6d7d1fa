"""A pytest session for the mphang plugin's tests (tests/integration/pytest_plugin.rs): a test
whose main thread blocks in C code while holding the GIL, so no Python signal handler can run.
ctypes.PyDLL keeps the GIL during the call (as a C extension without Py_BEGIN_ALLOW_THREADS);
the second lock of a default pthread mutex never returns, and signals do not interrupt it.
"""

import ctypes
import os
import signal


def test_before():
    path = os.environ.get("MPHANG_PIDS")
    if path:
        with open(path, "a") as f:
            f.write("pytest %d\n" % os.getpid())


def test_blocks_in_c_holding_the_gil():
    signal.alarm(120)
    libc = ctypes.PyDLL(None)
    mutex = ctypes.create_string_buffer(64)  # a pthread_mutex_t (40 bytes on x86_64)
    libc.pthread_mutex_init(mutex, None)
    libc.pthread_mutex_lock(mutex)
    libc.pthread_mutex_lock(mutex)  # CULPRIT: waits for itself, forever, holding the GIL


def test_after():
    pass

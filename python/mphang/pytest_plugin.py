"""pytest plugin: a hung test is diagnosed from outside, failed with the finding, and its
processes are ended, so the session goes on.

Off until asked for: ``pytest --mphang-timeout=60`` or ``mphang_timeout = 60`` in the ini file.
At session start each pytest process that runs tests (each pytest-xdist worker, too) starts
its own watcher, ``mphang watch``, a separate process that does not depend on this one: it
reads this process tree from outside (no code injected, no Python thread, so a held GIL cannot
stop it). The plugin only tells it, over a pipe, which test starts and ends.

When a test runs past its timeout the watcher diagnoses the tree, writes
``<report dir>/<test>/report.txt`` and ``report.json``, writes the finding to a reply pipe and
sends a signal. The handler installed here fails the test with that finding (pattern and
culprit line first); the watcher then ends the processes the test started. If the main thread
cannot take the signal (blocked in C code holding the GIL), the watcher writes the report, ends
the whole tree and says so in one line on stderr.

With pytest-timeout, a test's mphang deadline is set a few seconds before pytest-timeout's, so
mphang looks first (pytest-timeout's thread method ends the process with ``os._exit(1)`` and
its signal method leaves the stuck children running). See docs/ci.md.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from . import binary

# The watcher's pid, for the fork hook (see _allow_ptrace); None when no watcher runs.
_WATCHER_PID = None
_FORK_HOOK = False
_PRCTL = None

# PR_SET_PTRACER (linux/prctl.h, "Ya" "ma").
_PR_SET_PTRACER = 0x59616D61


def pytest_addoption(parser):
    group = parser.getgroup(
        "mphang", "diagnose hung tests from outside the process (mphang)"
    )
    group.addoption(
        "--mphang-timeout",
        type=float,
        default=None,
        metavar="SECONDS",
        help="fail a test that runs longer than this with mphang's diagnosis of the hang, "
        "and end the processes it started (default: off; ini: mphang_timeout)",
    )
    group.addoption(
        "--mphang-report-dir",
        default=None,
        metavar="DIR",
        help="where each hung test's report.txt and report.json are written "
        "(default: mphang-report; ini: mphang_report_dir)",
    )
    parser.addini(
        "mphang_timeout",
        "seconds after which mphang diagnoses and fails a test (off when unset)",
        default=None,
    )
    parser.addini(
        "mphang_report_dir",
        "where mphang writes the reports of hung tests",
        default="mphang-report",
    )


def _timeout(config):
    value = config.getoption("mphang_timeout")
    if value is None:
        ini = config.getini("mphang_timeout")
        if ini in (None, ""):
            return None
        try:
            value = float(ini)
        except ValueError:
            raise pytest.UsageError("mphang_timeout = %r is not a number of seconds" % ini)
    if value <= 0:
        return None
    return value


def pytest_configure(config):
    timeout = _timeout(config)
    if timeout is None:
        return
    config.pluginmanager.register(_Session(config, timeout), "mphang-session")


def _allow_ptrace():
    """Names the watcher as this process's debugger (Yama ptrace_scope=1 allows a process to
    read only its descendants otherwise). Runs in pytest and, through the fork hook, in every
    process forked from it; spawn and forkserver children cannot be reached this way."""
    if _WATCHER_PID is None or _PRCTL is None:
        return
    try:
        _PRCTL(_PR_SET_PTRACER, _WATCHER_PID, 0, 0, 0)
    except Exception:
        pass


def _load_prctl():
    """libc's prctl, looked up once in pytest: a fork child only calls it (no dlopen there)."""
    global _PRCTL
    if _PRCTL is None:
        try:
            import ctypes

            prctl = ctypes.CDLL(None, use_errno=True).prctl
            prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                              ctypes.c_ulong]
            _PRCTL = prctl
        except Exception:
            pass


def _arm_before(pytest_timeout):
    """mphang's deadline for a test that pytest-timeout ends after ``pytest_timeout`` seconds:
    early enough for the diagnosis (two looks) and the failure to land first."""
    return pytest_timeout - min(5.0, pytest_timeout / 2.0)


class _Session:
    def __init__(self, config, timeout):
        self.config = config
        self.timeout = timeout
        self.report_dir = config.getoption("mphang_report_dir") or config.getini(
            "mphang_report_dir"
        )
        self.active = False
        self.watcher = None
        self.control = None  # write end of the control pipe
        self.reply = None  # read end of the reply pipe
        self.signum = None
        self.previous_handler = None
        self.current = None  # nodeid of the running test
        self.in_phase = False  # inside its setup, call or teardown
        self.pytest_timeout = config.pluginmanager.hasplugin("timeout")
        self.why_off = None

    # -- session -------------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session):
        config = self.config
        if config.pluginmanager.hasplugin("dsession"):
            self.why_off = "this is the pytest-xdist controller; each worker has its own watcher"
            return
        if config.getoption("collectonly"):
            self.why_off = "--collect-only"
            return
        if threading.current_thread() is not threading.main_thread():
            self.why_off = "pytest does not run in the main thread, so no signal can reach it"
            return
        path = binary()
        if path is None:
            raise pytest.UsageError(
                "--mphang-timeout needs the mphang binary: pip install mphang "
                "(or set MPHANG_BIN)"
            )
        self.signum = self._free_signal()
        if self.signum is None:
            self.why_off = "SIGUSR1 and SIGUSR2 both have handlers already"
            return
        self._spawn(path)
        self.previous_handler = signal.signal(self.signum, self._on_signal)
        self.active = True

    def _free_signal(self):
        for sig in (signal.SIGUSR1, signal.SIGUSR2):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                return sig
        return None

    def _spawn(self, path):
        global _WATCHER_PID, _FORK_HOOK
        control_r, control_w = os.pipe()
        reply_r, reply_w = os.pipe()
        args = [
            path,
            "watch",
            "--pid",
            str(os.getpid()),
            "--control",
            str(control_r),
            "--reply",
            str(reply_w),
            "--signal",
            str(int(self.signum)),
            "--timeout",
            "%dms" % max(1, int(self.timeout * 1000)),
            "--report-dir",
            os.path.abspath(self.report_dir),
            "--detach",
            "--color",
            "never",
        ]
        capman = self.config.pluginmanager.getplugin("capturemanager")
        # The watcher's stderr must be the real one, not a capture file.
        ctx = capman.global_and_fixture_disabled() if capman else _Nothing()
        with ctx:
            starter = subprocess.Popen(
                args,
                pass_fds=(control_r, reply_w),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
            )
        out = starter.stdout.readline()
        starter.stdout.close()
        code = starter.wait()
        os.close(control_r)
        os.close(reply_w)
        if code != 0 or not out.strip().isdigit():
            os.close(control_w)
            os.close(reply_r)
            raise pytest.UsageError("mphang watch could not start (exit %d)" % code)
        os.set_blocking(reply_r, False)
        self.control, self.reply = control_w, reply_r
        self.watcher = int(out)
        _WATCHER_PID = self.watcher
        _load_prctl()
        _allow_ptrace()
        if not _FORK_HOOK and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_allow_ptrace)
            _FORK_HOOK = True

    def pytest_report_header(self, config):
        if self.active:
            extra = ""
            if self.pytest_timeout:
                extra = "; pytest-timeout is installed: mphang fires first"
            return "mphang: timeout %gs per test, watcher pid %d%s; reports in %s" % (
                self.timeout,
                self.watcher,
                extra,
                self.report_dir,
            )
        if self.why_off:
            return "mphang: off (%s)" % self.why_off
        return None

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session):
        self._close()

    def pytest_unconfigure(self, config):
        self._close()

    def _close(self):
        global _WATCHER_PID
        if not self.active:
            return
        self.active = False
        _WATCHER_PID = None
        for fd in (self.control, self.reply):
            try:
                os.close(fd)
            except OSError:
                pass
        if signal.getsignal(self.signum) == self._on_signal:
            signal.signal(self.signum, self.previous_handler or signal.SIG_DFL)

    def _send(self, line):
        if not self.active:
            return
        try:
            os.write(self.control, (line.replace("\n", " ") + "\n").encode("utf-8", "replace"))
        except OSError:
            pass  # the watcher is gone; the tests run on unwatched

    # -- tests ---------------------------------------------------------------------------

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.current = item.nodeid
        # When the test starts, on the clock /proc's start times count from: the processes
        # started after it are the test's (the watcher may read this line later).
        try:
            boot = str(time.clock_gettime_ns(time.CLOCK_BOOTTIME))
        except (AttributeError, OSError):
            boot = "-"
        self._send("start %d %s %s" % (int(self.timeout * 1000), boot, item.nodeid))
        try:
            yield
        finally:
            self.current = None
            self._send("end %s" % item.nodeid)

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item):
        self.in_phase = True
        try:
            yield
        finally:
            self.in_phase = False

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_call(self, item):
        self.in_phase = True
        try:
            yield
        finally:
            self.in_phase = False

    @pytest.hookimpl(hookwrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item, nextitem):
        self.in_phase = True
        try:
            yield
        finally:
            self.in_phase = False

    @pytest.hookimpl(optionalhook=True, tryfirst=True)
    def pytest_timeout_set_timer(self, item, settings):
        """pytest-timeout arms its timer for this test: arm mphang before it."""
        if settings.timeout and settings.timeout > 0:
            limit = _arm_before(settings.timeout)
            if limit < self.timeout:
                self._send("limit %d" % max(1, int(limit * 1000)))
        return None  # pytest-timeout still arms its own timer

    # -- the signal ----------------------------------------------------------------------

    def _read_reply(self):
        data = b""
        while True:
            try:
                chunk = os.read(self.reply, 65536)
            except BlockingIOError:
                break
            except OSError:
                break
            if not chunk:
                break
            data += chunk
        lines = [l for l in data.decode("utf-8", "replace").splitlines() if l.strip()]
        if not lines:
            return None
        try:
            return json.loads(lines[-1])
        except ValueError:
            return None

    def _on_signal(self, signum, frame):
        __tracebackhide__ = True
        info = self._read_reply() or {}
        nodeid = info.get("nodeid", self.current)
        if self.current is None or nodeid != self.current or not self.in_phase:
            self._send("late %s" % nodeid)
            return
        self._send("ack %s" % nodeid)
        message = info.get("message") or "mphang: the test timed out (no diagnosis received)"
        pytest.fail(message.rstrip("\n"), pytrace=True)


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

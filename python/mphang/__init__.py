"""mphang: diagnose hung Python multiprocessing process trees from the outside.

The work is done by the ``mphang`` binary that this wheel puts on PATH; this package holds
the pytest plugin (:mod:`mphang.pytest_plugin`) and :func:`binary`, which finds the binary.
"""

import os
import shutil
import sys
import sysconfig

__all__ = ["binary"]


def binary():
    """Path of the mphang binary: ``$MPHANG_BIN``, the one installed next to this package's
    Python (the wheel's scripts directory), then ``mphang`` on PATH. None when there is none."""
    explicit = os.environ.get("MPHANG_BIN")
    if explicit:
        return explicit
    candidates = [sysconfig.get_path("scripts"), os.path.dirname(sys.executable)]
    if "posix_user" in sysconfig.get_scheme_names():  # pip install --user
        candidates.append(sysconfig.get_path("scripts", scheme="posix_user"))
    for directory in candidates:
        path = os.path.join(directory, "mphang")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which("mphang")

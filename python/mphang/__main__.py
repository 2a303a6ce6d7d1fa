"""``python -m mphang ARGS`` runs the mphang binary with ARGS."""

import os
import sys

from . import binary


def main():
    path = binary()
    if path is None:
        sys.stderr.write("mphang: the mphang binary is not installed next to this Python\n")
        return 2
    os.execv(path, [path] + sys.argv[1:])
    return 2  # not reached


if __name__ == "__main__":
    sys.exit(main())

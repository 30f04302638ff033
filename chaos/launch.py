"""``python -m chaos.launch --parent PID -- ARGV...``: exec ARGV, to die with the controller.

For processes that cannot take ``--parent`` themselves (``geeh run``): the kernel's
parent-death signal survives the exec.
"""

from __future__ import annotations

import os
import sys

from .proc import die_with_parent


def main(argv: list[str]) -> None:
    if len(argv) < 4 or argv[0] != "--parent" or argv[2] != "--":
        sys.exit("usage: python -m chaos.launch --parent PID -- ARGV...")
    die_with_parent(int(argv[1]))
    os.execvp(argv[3], argv[3:])


if __name__ == "__main__":
    main(sys.argv[1:])

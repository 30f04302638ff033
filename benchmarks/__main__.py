"""``python -m benchmarks [--quick] [--only NAME ...] [--merge] [--report-only]``."""

from __future__ import annotations

import sys

from .run import main

if __name__ == "__main__":
    sys.exit(main())

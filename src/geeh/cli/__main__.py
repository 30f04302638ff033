"""``python -m geeh.cli``: the ``geeh`` command."""

import sys

from . import main

sys.exit(main())

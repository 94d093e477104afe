"""``python -m aevb``: the ``aevb`` command, for environments without the console script on PATH."""

import sys

from .console import main

sys.exit(main())

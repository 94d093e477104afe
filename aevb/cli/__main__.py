"""``python -m aevb.cli``: the ``aevb`` command."""

import sys

from . import main

sys.exit(main())

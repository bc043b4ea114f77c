"""``python -m conveyor``: the command line (``conveyor.cli``)."""

import sys

from .cli import main

sys.exit(main())

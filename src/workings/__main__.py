"""``python -m workings``: the same command line as ``workings``."""

import sys

from workings.cli import main

sys.exit(main())

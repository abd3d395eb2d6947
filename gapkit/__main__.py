"""``python -m gapkit``: the command line."""

import sys

from gapkit.cli import main

sys.exit(main())

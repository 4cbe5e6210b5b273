"""``python -m edgetune``: the command line, as the ``edgetune`` script."""

import sys

from .cli import main

sys.exit(main())

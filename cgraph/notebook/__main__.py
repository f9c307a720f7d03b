"""`python -m cgraph.notebook ...`: see cgraph.notebook.cli."""

import sys

from cgraph.notebook.cli import main

sys.exit(main())

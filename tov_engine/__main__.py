"""`python -m tov_engine select ...`."""

import sys

from tov_engine.cli import main

sys.exit(main())

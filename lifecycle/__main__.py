"""Run the Seamline CLI: python -m lifecycle."""

import sys

from .cli import main

sys.exit(main())

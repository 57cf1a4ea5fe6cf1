"""`python -m training.report`: see the package's doc."""

import sys

from .cli import main

sys.exit(main())

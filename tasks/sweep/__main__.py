"""``python -m tasks.sweep <multirun dir>``: write the summary of a sweep (a stopped one, or one
whose jobs were edited)."""

import sys

from .summary import main

if __name__ == "__main__":
    sys.exit(main())

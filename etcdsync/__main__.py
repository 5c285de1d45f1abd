"""``python -m etcdsync``: the ``etcdsync`` command line (see :mod:`etcdsync.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

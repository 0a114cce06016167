"""``python -m streams.cli``: the ``eddyline`` command, for subprocesses started with the current interpreter."""

import sys

from streams.cli import main

sys.exit(main())

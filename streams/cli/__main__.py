"""``python -m streams.cli``: the ``eddyline`` command (tests and supervisors start flows this way)."""

from streams.cli import main

main()

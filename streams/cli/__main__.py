"""``python -m streams.cli``: the ``eddyline`` command."""

from streams.cli import main

main()

"""``python -m streams.cli``: the ``eddyline`` command without its installed script."""

from streams.cli import main

main()

"""The live page's files, a package so that installs (not only editable ones) carry them."""

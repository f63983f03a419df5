"""``python -m dualpatch.cli``: the command line."""

from dualpatch.cli.main import console

console()

"""The `wsq` command (console script ``wsq.cli:main``; also ``python -m wsq.cli``)."""

from wsq.cli.main import main

__all__ = ["main"]

"""The `ftdata` command line (`app`): it parses arguments, calls the library and prints.

No module outside this package imports it.
"""

from ftdata.cli.app import app, main

__all__ = ["app", "main"]

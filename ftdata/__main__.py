"""`python -m ftdata`: the same command line as the `ftdata` script."""

from ftdata.cli.app import main

if __name__ == "__main__":
    main()

"""Allow `python -m freshrank`."""

from freshrank.cli import main

main()

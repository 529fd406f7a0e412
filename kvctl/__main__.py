"""`python -m kvctl ...` (ops/kvctl runs this)."""

from kvctl.cli import main

main()

"""Entry point of ``python -m ops`` (ops/cli.py)."""

from __future__ import annotations

import sys

from ops.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m rota`` is the ``rota`` command."""

from __future__ import annotations

import sys

from rota.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m intentus_trio.mcp --config FILE``: see ``intentus_trio.mcp.cli``."""

import sys

from .cli import main

sys.exit(main())

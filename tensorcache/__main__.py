"""``python -m tensorcache``: the ``tensorcache`` command."""
import sys

from .cli import main

sys.exit(main())

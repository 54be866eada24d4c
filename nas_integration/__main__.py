"""``python -m nas_integration``: the ``run_search`` command."""
import sys

from .cli import main

sys.exit(main())

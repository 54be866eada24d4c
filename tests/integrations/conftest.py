"""The helper modules beside these tests (``dh_app``, ``tiny_job``) import by name, as worker processes need."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

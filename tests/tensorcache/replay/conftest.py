"""The helper module beside these tests (``evolution_sim``) imports by name."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

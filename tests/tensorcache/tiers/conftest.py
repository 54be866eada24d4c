import pytest

from tensorcache.tiers.lmdb import file_system
from tensorcache.tiers.prefault import POPULATES


@pytest.fixture
def holes(tmp_path):
    """Skip unless ``tmp_path`` shows pages reserved but not yet written as holes (ext4, XFS) and the kernel
    can prepare pages (Linux 5.14+, MADV_POPULATE_WRITE): the page-preparation tests read both."""
    kind = file_system(str(tmp_path))
    if kind not in ("ext4", "xfs") or not POPULATES:
        pytest.skip(f"needs ext4 or XFS (reserved pages read as holes), not {kind!r}, and Linux 5.14+")
    return tmp_path

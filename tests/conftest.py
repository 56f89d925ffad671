"""Shared test fixtures: tiny networks and the real CT examples in ../shared (skipped when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("AUTOLR_SHARED_DATA", REPO.parent / "shared" / "data" / "totalseg-example"))

TINY_NETWORK = {
    "high_blocks": [["conv", 4], ["RA", 4], ["RB", 8]],
    "low_blocks": [["conv", 4], ["RA", 8], ["RB", 8]],
    "fc_channels": [8],
}


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "ct.nii.gz").is_file():
        pytest.skip(f"real CT examples not found at {SHARED_DATA} (set AUTOLR_SHARED_DATA to the totalseg-example folder)")
    return SHARED_DATA

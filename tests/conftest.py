"""Shared fixtures: the reference data in ../shared/reference (skipped with a reason when absent)."""
from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def reference_file(*parts: str) -> Path:
    """Path of a reference file; skips the calling test when the shared folder is missing."""
    path = REFERENCE.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not found at {path} (expected ../shared/reference beside the repo)")
    return path

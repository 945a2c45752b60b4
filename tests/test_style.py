"""The code base passes its own linter (ruff, configured in pyproject.toml)."""

from __future__ import annotations

import subprocess

from .conftest import REPO


def test_ruff_finds_nothing():
    result = subprocess.run(
        ["ruff", "check", str(REPO)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-3000:]

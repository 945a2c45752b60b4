"""The measuring tools' own logic (their results are committed with commands)."""

from __future__ import annotations

import pytest

from benchmarks.checkpoint_ab import labels


def test_checkpoint_ab_tells_two_runs_checkpoints_apart():
    # Two runs' checkpoints share a file name; a table keyed by it kept only one.
    paths = ["released/base.pt", "runs/A/checkpoint.pt", "runs/B/checkpoint.pt"]
    assert labels(paths) == ["released/base.pt", "A/checkpoint.pt", "B/checkpoint.pt"]
    assert labels(["a.pt", "b.pt"]) == ["a.pt", "b.pt"]
    with pytest.raises(ValueError, match="twice"):
        labels(["runs/a.pt", "runs/a.pt"])

"""The package metadata: requirements.txt lists exactly pyproject's runtime dependencies."""

from __future__ import annotations

from pathlib import Path

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def _normalise(spec: str) -> str:
    return str(Requirement(spec))


def test_requirements_txt_matches_pyproject():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = sorted(_normalise(d) for d in pyproject["project"]["dependencies"])
    lines = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    listed = sorted(_normalise(line) for line in lines if line and not line.startswith("#"))
    assert listed == declared

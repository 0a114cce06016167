"""The README's CLI section names what exists: every benchmark registered in pyproject.toml, and no other."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_lists_every_registered_benchmark() -> None:
    cli = (ROOT / "README.md").read_text().split("## The CLI", 1)[1].split("Every command and option", 1)[0]
    listed = cli.split("eddyline bench NAME --json PATH", 1)[1].split("(entry points", 1)[0]
    names = set(re.findall(r"[a-z][a-z-]*[a-z]", listed.replace("[--cv]", ""))) - {"name"}
    registered = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["eddyline.bench"]
    assert names == set(registered)

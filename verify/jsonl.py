"""Append-as-you-go result files: one JSON object a line, so a killed run loses at most the line
it was writing, and the next run reads back what is whole."""

from __future__ import annotations

import json
from pathlib import Path


def read(path: Path) -> list[dict]:
    """The whole lines of `path` as dicts (none if it does not exist); a line cut short is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a killed run
    return rows


def append(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row, default=str) + "\n")

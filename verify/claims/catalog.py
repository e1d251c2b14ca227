"""The catalogue of claims: read from CATALOGUE.md beside this file, the one list of ids, groups,
seeds, quotes and the backend each measurement needs. Its order is the ledger's order."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CATALOGUE_MD = Path(__file__).resolve().parent / "CATALOGUE.md"

GROUPS = {
    "P": "Parameter counts",
    "B": "Bytes, dtypes and model size",
    "T": "Training memory",
    "I": "Inference and generation memory",
    "S": "Sampling (temperature, top-k, top-p)",
    "L": "Fine-tuning, embeddings, masks",
}
NEEDS = ("arith", "meta", "cpu", "fake", "cuda")  # backends a measurement can need


@dataclass(frozen=True)
class Entry:
    id: str  # claim id (P1, T3, ...)
    group: str  # key of GROUPS
    seed: str  # seed article number ("004", "004, 003"), or "-" for a claim the seeds omit
    quote: str  # the seed's words, short
    how: str  # how the claim is checked
    needs: str  # backend the measurement runs on: arith | meta | cpu | fake | cuda


ROW = re.compile(r"^\| ([A-Z]\d+) \| ([A-Z]) \| ([^|]+) \| ([^|]+) \| ([^|]+) \| (\w+) \|$")


def parse(text: str) -> tuple[Entry, ...]:
    """The entries of the catalogue's claims table, in order; a malformed table raises ValueError."""
    entries = []
    for line in text.splitlines():
        m = ROW.match(line.strip())
        if m:
            cid, group, seed, quote, how, needs = (g.strip() for g in m.groups())
            if group not in GROUPS or needs not in NEEDS:
                raise ValueError(f"{CATALOGUE_MD.name}: {cid} has group {group!r} or backend {needs!r} that is not known")
            entries.append(Entry(cid, group, seed, quote, how, needs))
    ids = [e.id for e in entries]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{CATALOGUE_MD.name}: an id appears twice")
    return tuple(entries)


def catalog() -> tuple[Entry, ...]:
    """Every catalogued claim, in the ledger's order (read from CATALOGUE.md)."""
    return parse(CATALOGUE_MD.read_text(encoding="utf-8"))


def by_id() -> dict[str, Entry]:
    """Claim id -> its catalogue entry."""
    return {e.id: e for e in catalog()}

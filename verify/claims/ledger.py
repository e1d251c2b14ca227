"""Run the checks of the ledger: pick a backend per claim, append each Claim to JSONL as it
comes, and resume from that file after an interrupted run."""

from __future__ import annotations

import importlib
import time
import traceback
from pathlib import Path
from typing import Callable

from verify import jsonl as jsonl_file
from verify.claims import CHECKS, Claim, Verdict, placeholder
from verify.claims.catalog import BY_ID, CATALOG

CHECK_MODULES = ("params", "memory", "shard", "other")
PREFERENCE = ("cuda", "fake", "cpu", "meta", "arith")  # most direct measurement first
ALLOWED = {
    "meta": {"arith", "meta"},
    "fake": {"arith", "meta", "cpu", "fake"},
    "cuda": {"arith", "meta", "cpu", "cuda"},
}


def load_checks() -> dict:
    for name in CHECK_MODULES:
        importlib.import_module(f"verify.claims.{name}")
    return CHECKS


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def allowed_backends(backend: str) -> set[str]:
    """--backend meta|fake|cuda|auto -> the backends whose checks may run."""
    if backend == "auto":
        return ALLOWED["fake"] | ({"cuda"} if cuda_available() else set())
    if backend not in ALLOWED:
        raise ValueError(f"unknown backend {backend!r}; choose meta, fake, cuda or auto")
    if backend == "cuda" and not cuda_available():
        raise ValueError("--backend cuda needs a CUDA GPU and none is visible (torch.cuda.is_available() is False); use --backend fake")
    return ALLOWED[backend]


def select_ids(only: str | None) -> list[str]:
    if not only:
        return [e.id for e in CATALOG]
    ids = [i.strip().upper() for i in only.split(",") if i.strip()]
    unknown = [i for i in ids if i not in BY_ID]
    if unknown:
        raise ValueError(f"unknown claim id(s) {', '.join(unknown)}; ids are {', '.join(e.id for e in CATALOG)}")
    return ids


def plan(claim_id: str, allowed: set[str]) -> str | None:
    """The backend whose check runs for `claim_id`, or None if none is allowed."""
    registered = CHECKS.get(claim_id, {})
    for b in PREFERENCE:
        if b in registered and b in allowed:
            return b
    return None


def _finished(path: Path) -> dict[tuple[str, str], Claim]:
    """Claims a previous run wrote to `path`, by (id, backend); ERROR and PENDING are run again."""
    return {(d["id"], d["backend"]): Claim(**d) for d in jsonl_file.read(path)
            if d.get("verdict") not in (Verdict.ERROR.value, Verdict.PENDING.value)}


def run(
    backend: str = "auto",
    only: str | None = None,
    jsonl: Path | None = None,
    progress: Callable[[int, int, Claim, float], None] | None = None,
) -> list[Claim]:
    """Every selected claim, in catalogue order. With `jsonl`, results already there are
    reused and each new one is appended as soon as it exists."""
    load_checks()
    allowed = allowed_backends(backend)
    ids = select_ids(only)
    done = _finished(jsonl) if jsonl else {}
    out: list[Claim] = []
    for i, cid in enumerate(ids, 1):
        start = time.perf_counter()
        chosen = plan(cid, allowed)
        if chosen is None:
            needs = sorted(CHECKS.get(cid, {}) or [BY_ID[cid].needs])
            claim = placeholder(cid, Verdict.PENDING, f"pending: needs {' or '.join(needs)}", needs[0])
        elif (cid, chosen) in done:
            claim = done[(cid, chosen)]
        else:
            try:
                claim = CHECKS[cid][chosen]()
            except Exception as e:  # recorded, the run goes on
                tb = traceback.format_exception_only(type(e), e)[-1].strip()
                claim = placeholder(cid, Verdict.ERROR, f"check failed: {tb}", chosen)
            if jsonl:
                jsonl_file.append(jsonl, claim.as_dict())
        out.append(claim)
        if progress:
            progress(i, len(ids), claim, time.perf_counter() - start)
    return out

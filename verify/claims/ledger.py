"""Run the checks of the ledger: pick a backend per claim, stamp each Claim with when and by which
code and machine it was measured, append it to a JSONL file as it comes, and resume from that file
after an interrupted run, reusing only what the same code, versions, hardware and backend made."""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Callable

from verify import jsonl as jsonl_file
from verify.claims import Claim, Context, Verdict, placeholder
from verify.claims.catalog import by_id, catalog

PREFERENCE = ("cuda", "fake", "cpu", "meta", "arith")  # most direct measurement first
ALLOWED = {
    "meta": {"arith", "meta"},
    "fake": {"arith", "meta", "cpu", "fake"},
    "cuda": {"arith", "meta", "cpu", "cuda"},
}


def checks() -> dict[str, dict[str, Callable[[Context], Claim]]]:
    """The one table of checks: claim id -> backend -> the function that measures it there."""
    from verify.claims import memory, other, params, shard

    on_gpu_too = ("fake", "cuda")  # their runs are MemorySpecs, measured on whichever backend the context names
    table = {
        "P1": {"meta": params.p1}, "P2": {"meta": params.p2}, "P3": {"meta": params.p3}, "P4": {"meta": params.p4},
        "P5": {"meta": params.p5}, "P6": {"meta": params.p6}, "P7": {"meta": params.p7}, "P8": {"meta": params.p8},
        "P9": {"meta": params.p9}, "P10": {"meta": params.p10}, "P11": {"meta": params.p11}, "P12": {"meta": params.p12},
        "P13": {"meta": params.p13}, "P14": {"meta": other.p14},
        "B1": {"cpu": other.b1}, "B2": {"fake": memory.b2}, "B3": {"cpu": other.b3}, "B4": {"arith": other.b4},
        "B5": {"fake": memory.b5}, "B6": {"meta": other.b6}, "N1": {"cpu": other.n1},
        "T1": dict.fromkeys(on_gpu_too, memory.t1), "T2": dict.fromkeys(on_gpu_too, memory.t2),
        "T3": dict.fromkeys(on_gpu_too, memory.t3), "T4": dict.fromkeys(on_gpu_too, memory.t4), "T5": {"fake": memory.t5},
        "T6": {"fake": shard.t6}, "T7": {"arith": other.t7},
        "I1": dict.fromkeys(on_gpu_too, memory.i1), "I2": dict.fromkeys(on_gpu_too, memory.i2),
        "I3": dict.fromkeys(on_gpu_too, memory.i3), "I4": dict.fromkeys(on_gpu_too, memory.i4), "Q1": {"meta": other.q1},
        "S1": {"cpu": other.s1}, "S2": {"cpu": other.s2}, "S3": {"cpu": other.s3}, "S4": {"cpu": other.s4},
        "L1": {"cpu": other.l1}, "L2": {"cpu": other.l2}, "L3": {"cpu": other.l3}, "A1": {"cpu": other.a1},
    }
    unknown = set(table) - set(by_id())
    if unknown:
        raise KeyError(f"checks for ids the catalogue does not hold: {sorted(unknown)}")
    return table


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
    """The ids `only` names ("P1,T3"), in catalogue order; every id when `only` is empty."""
    everything = [e.id for e in catalog()]
    if not only:
        return everything
    ids = {i.strip().upper() for i in only.split(",") if i.strip()}
    unknown = sorted(ids - set(everything))
    if unknown:
        raise ValueError(f"unknown claim id(s) {', '.join(unknown)}; ids are {', '.join(everything)}")
    return [i for i in everything if i in ids]


def plan(claim_id: str, allowed: set[str], table: dict) -> str | None:
    """The backend whose check runs for `claim_id`, or None if none is allowed."""
    registered = table.get(claim_id, {})
    for b in PREFERENCE:
        if b in registered and b in allowed:
            return b
    return None


def from_dict(d: dict) -> Claim:
    """A Claim from its stored dict (fields this version does not know are dropped)."""
    known = set(Claim.__dataclass_fields__)
    return Claim(**{k: v for k, v in d.items() if k in known})


def reusable(path: Path, fingerprint: str) -> dict[tuple[str, str], Claim]:
    """Claims an interrupted run wrote to `path` with this `fingerprint`, by (id, backend); ERROR and
    PENDING entries, and entries of other code, versions or hardware, are measured again."""
    return {(d["id"], d["backend"]): from_dict(d) for d in jsonl_file.read(path)
            if d.get("fingerprint") == fingerprint and d.get("verdict") not in (Verdict.ERROR.value, Verdict.PENDING.value)}


def run(
    backend: str = "auto",
    only: str | None = None,
    jsonl: Path | None = None,
    progress: Callable[[int, int, Claim, bool], None] | None = None,
    gpu_terms: bool = True,
) -> list[Claim]:
    """Every selected claim, in catalogue order, each stamped with measured_at, fingerprint and
    commit. With `jsonl`, results an interrupted run left there are reused when their fingerprint
    and backend match this run's, and each new result is appended as soon as it exists. `gpu_terms`:
    fake-backend peaks include the modelled CUDA terms (False: the trace alone)."""
    from verify.provenance import fingerprint, git_commit, hardware, utc_now

    table = checks()
    allowed = allowed_backends(backend)
    ids = select_ids(only)
    fp, commit = fingerprint(hardware()), git_commit()
    done = reusable(jsonl, fp) if jsonl else {}
    cache: dict = {}  # measurements the checks of this run share
    out: list[Claim] = []
    for i, cid in enumerate(ids, 1):
        chosen = plan(cid, allowed, table)
        resumed = (cid, chosen) in done
        if chosen is None:
            needs = sorted(table.get(cid, {}) or [by_id()[cid].needs])
            claim = placeholder(cid, Verdict.PENDING, f"pending: needs {' or '.join(needs)}", needs[0])
        elif resumed:
            claim = done[(cid, chosen)]
        else:
            start, measured_at = time.perf_counter(), utc_now()
            try:
                claim = table[cid][chosen](Context(backend=chosen, cache=cache, gpu_terms=gpu_terms))
            except Exception as e:  # recorded, the run goes on
                tb = traceback.format_exception_only(type(e), e)[-1].strip()
                claim = placeholder(cid, Verdict.ERROR, f"check failed: {tb}", chosen)
            claim.backend, claim.measured_at, claim.fingerprint, claim.commit = chosen, measured_at, fp, commit
            claim.seconds = round(time.perf_counter() - start, 2)
            if jsonl:
                jsonl_file.append(jsonl, claim.as_dict())
        out.append(claim)
        if progress:
            progress(i, len(ids), claim, resumed)
    return out

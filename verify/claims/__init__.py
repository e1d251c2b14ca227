"""The claims ledger: one Claim per catalogued id -> predicted, measured, tolerance, verdict.

A check is a plain function `check(ctx: Context) -> Claim` that measures on `ctx.backend` and
returns `judge(...)`. Checks live in one module per group of backends:
  params.py   P1-P13         (meta-device introspection)
  memory.py   B2 B5 T1-T5 I1-I4 (fake tensors; T1-T4 and I1-I4 also on cuda where a GPU is present)
  shard.py    T6             (FSDP2 on a fake process group)
  other.py    N1 B1 B3 B4 B6 S1-S4 L1-L3 A1 T7 Q1 P14 (real CPU runs, meta storage, arithmetic)
The ledger (ledger.py) holds the one table of which function checks which id on which backend,
and picks, per id, the best backend allowed and available.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Callable

from verify.claims.catalog import by_id
from verify.units import rel_error

BACKENDS = ("arith", "meta", "cpu", "fake", "cuda")  # arith: arithmetic on the seed's numbers only


class Verdict(str, enum.Enum):
    CONFIRMED = "CONFIRMED"  # within the claim's tolerance
    APPROXIMATE = "APPROXIMATE"  # within the stated looser bound
    REFUTED = "REFUTED"  # outside both
    NOT_TESTABLE = "NOT TESTABLE HERE"  # cannot be measured here; the explanation says why
    PENDING = "PENDING"  # the backend it needs is not run or not available
    ERROR = "ERROR"  # the check raised; the explanation holds the error


@dataclass
class Claim:
    id: str
    group: str
    seed: str
    quote: str
    verdict: str
    predicted: object  # the seed's figure (number, or text for non-numeric claims)
    measured: object  # the measured figure
    unit: str  # "params", "bytes", "ratio", "x", "bool", ...
    rel_error: float | None  # (predicted - measured) / measured, signed
    tolerance: float | None  # |rel_error| bound for CONFIRMED (0 = exact)
    loose: float | None  # |rel_error| bound for APPROXIMATE
    explanation: str  # one sentence: why predicted and measured differ (or agree)
    corrected: str | None = None  # the formula the measurement supports, where the seed is wrong
    corrected_value: object = None  # that formula's figure on the same input
    corrected_rel_error: float | None = None  # corrected_value against measured
    inconsistency: str | None = None  # the claim disagrees with itself (arithmetic, two sides)
    evidence: dict = field(default_factory=dict)  # the measured figures behind the verdict
    backend: str = "meta"
    command: str = ""  # a command that reproduces the measurement
    measured_at: str | None = None  # UTC, ISO 8601: when the check ran (None: never measured)
    fingerprint: str | None = None  # verify.provenance.fingerprint of the code and machine that measured it
    commit: str | None = None  # git commit of that code ("+uncommitted" when verify/ or models/ differed)
    seconds: float | None = None  # wall seconds the check took
    stale: bool = False  # measured by other code, versions or hardware than the report's: shown, never as current

    def as_dict(self) -> dict:
        return asdict(self)


def verdict_for(rel: float | None, tolerance: float, loose: float | None) -> Verdict:
    if rel is None:
        raise ValueError("a numeric verdict needs a relative error")
    if abs(rel) <= tolerance:
        return Verdict.CONFIRMED
    if loose is not None and abs(rel) <= loose:
        return Verdict.APPROXIMATE
    return Verdict.REFUTED


def judge(
    claim_id: str,
    *,
    predicted,
    measured,
    unit: str,
    explanation: str,
    backend: str,
    command: str,
    tolerance: float | None = 0.0,
    loose: float | None = None,
    verdict: Verdict | None = None,
    corrected: str | None = None,
    corrected_value=None,
    inconsistency: str | None = None,
    evidence: dict | None = None,
) -> Claim:
    """Build the Claim for `claim_id`. Numeric predicted/measured get a relative error and a
    verdict from the tolerances; a non-numeric claim passes its `verdict` explicitly."""
    entry = by_id()[claim_id]
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (predicted, measured))
    rel = rel_error(predicted, measured) if numeric else None
    if verdict is None:
        verdict = verdict_for(rel, tolerance or 0.0, loose)
    corr_rel = None
    if isinstance(corrected_value, (int, float)) and numeric:
        corr_rel = rel_error(corrected_value, measured)
    return Claim(
        id=claim_id,
        group=entry.group,
        seed=entry.seed,
        quote=entry.quote,
        verdict=Verdict(verdict).value,
        predicted=predicted,
        measured=measured,
        unit=unit,
        rel_error=rel,
        tolerance=tolerance,
        loose=loose,
        explanation=explanation,
        corrected=corrected,
        corrected_value=corrected_value,
        corrected_rel_error=corr_rel,
        inconsistency=inconsistency,
        evidence=evidence or {},
        backend=backend,
        command=command,
    )


def placeholder(claim_id: str, verdict: Verdict, explanation: str, backend: str) -> Claim:
    """An entry with no measurement: PENDING (backend not run) or ERROR."""
    entry = by_id()[claim_id]
    return Claim(
        id=claim_id,
        group=entry.group,
        seed=entry.seed,
        quote=entry.quote,
        verdict=verdict.value,
        predicted=None,
        measured=None,
        unit="",
        rel_error=None,
        tolerance=None,
        loose=None,
        explanation=explanation,
        backend=backend,
    )


@dataclass
class Context:
    """What a check runs with: the backend it measures on, and the results already measured in this
    ledger run, so that checks sharing a run measure it once (the ledger owns the dict; nothing is
    cached between runs)."""

    backend: str  # arith | meta | cpu | fake | cuda: where this check's measurements run
    cache: dict = field(default_factory=dict)  # key -> result, shared by the checks of one ledger run
    gpu_terms: bool = True  # fake backend: add the modelled CUDA terms to peaks (False: the trace alone)

    def memo(self, key, compute: Callable[[], object]):
        """The result stored under `key`, computed by `compute()` the first time it is asked for."""
        if key not in self.cache:
            self.cache[key] = compute()
        return self.cache[key]

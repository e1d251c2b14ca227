"""What fits a memory budget: the largest batch for a sequence length, or the largest sequence for a
batch, found by runs of a measuring function the caller supplies (`peak_at`: value -> measured
peak bytes; the fit command passes fake-tensor traces), as verify.predict.shard.min_world_size
takes its measurement from the caller. The answer is measured on both sides: the peak at the
answer fits, the peak one above it does not.

A prediction (the corrected predictor's peak, verify.predict.memory) only says where to start;
where it covers no run the search starts at the smallest value. From there it steps by secant
(the peak is close to linear in the batch, and between linear and quadratic in the sequence),
bounded to at most 8x per step upward and safeguarded by bisection, so a wrong start costs a few
runs, not a wrong answer. Assumed, not checked: the peak does not fall as the batch or the
sequence grows (more tokens never free memory), so one fitting value and one failing value above
it bracket the boundary.

Nothing here runs a step: the runs come from the caller. `predicted_peak` reads the corrected
predictor (pure arithmetic on the config, after one meta build for the parameter tensors).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_RUNS = 40  # a search that needs more has met a peak that is not monotone; it stops and says so
MAX_GROWTH = 8  # an upward step goes at most this many times the largest fitting value


@dataclass
class Boundary:
    """The largest value of one setting whose measured peak fits, and the runs that show it."""

    largest: int  # the largest value whose peak fits; 0 when not even `low` fits
    peak_at_largest: int | None  # measured peak at `largest` (None when largest is 0)
    peak_above: int | None  # measured peak at largest + 1 (None when largest is the limit)
    usable_bytes: int  # the budget compared against
    limit: int  # the largest value searched (the model's positions, or the batch cap)
    start: int  # the value measured first (the prediction's answer, clamped, or `low`)
    measured: dict[int, int] = field(default_factory=dict)  # value -> measured peak, every run made, in order
    complete: bool = True  # False when MAX_RUNS ran out before the boundary was bracketed

    def as_dict(self) -> dict:
        return {"largest": self.largest, "peak_bytes_at_max": self.peak_at_largest, "peak_bytes_above": self.peak_above,
                "usable_bytes": self.usable_bytes, "limit": self.limit, "start": self.start,
                "measured_peaks": dict(self.measured), "runs": len(self.measured), "complete": self.complete}


def largest_fitting(peak_at: Callable[[int], int], usable: int, limit: int, start: int | None = None,
                    low: int = 1) -> Boundary:
    """The largest x in [low, limit] with peak_at(x) <= usable, measured at x and x + 1 (see the
    module docstring for the steps); `start`: where to measure first (a prediction)."""
    if limit < low:
        raise ValueError(f"nothing to search: limit {limit} is below {low}")
    measured: dict[int, int] = {}

    def peak(x: int) -> int:
        if x not in measured:
            measured[x] = int(peak_at(x))
        return measured[x]

    lo = hi = None  # largest value known to fit, smallest known not to
    x = min(max(start if start is not None else low, low), limit)
    first = x
    last_width = None
    for _ in range(MAX_RUNS):
        if peak(x) <= usable:
            lo = x if lo is None else max(lo, x)
        else:
            hi = x if hi is None else min(hi, x)
        if hi == low:
            return _done(0, None, measured[low], usable, limit, first, measured)
        if lo == limit:
            return _done(limit, measured[limit], None, usable, limit, first, measured)
        if lo is not None and hi is not None and hi == lo + 1:
            return _done(lo, measured[lo], measured[hi], usable, limit, first, measured)
        if hi is None:  # everything measured fits: step up
            x = min(limit, max(lo + 1, min(_secant(measured, lo, usable, below=True), MAX_GROWTH * lo)))
        elif lo is None:  # nothing measured fits: step down
            x = max(low, min(hi - 1, max(_secant(measured, hi, usable, below=False), hi // MAX_GROWTH)))
        else:  # between: interpolate, bisect when interpolation stops halving the bracket
            width = hi - lo
            guess = lo + (usable - measured[lo]) * (hi - lo) // max(1, measured[hi] - measured[lo])
            if last_width is not None and width > last_width // 2:
                guess = (lo + hi) // 2
            x = min(hi - 1, max(lo + 1, guess))
            last_width = width
    largest = lo or 0
    return _done(largest, measured.get(largest), measured.get(largest + 1), usable, limit, first, measured, complete=False)


def _secant(measured: dict[int, int], at: int, usable: int, below: bool) -> int:
    """Where the line through the two measured points nearest `at` crosses `usable`; with one
    point, or a flat line, the neighbour of `at` (one point: the boundary is often next to a
    predicted start) or twice / half of it."""
    others = sorted((x for x in measured if x != at), key=lambda x: abs(x - at))
    if not others:
        return at + 1 if below else at - 1
    x0 = others[0]
    slope = (measured[at] - measured[x0]) / (at - x0)
    if slope <= 0:
        return 2 * at if below else at // 2
    return int(at + (usable - measured[at]) / slope)


def _done(largest, at, above, usable, limit, start, measured, complete=True) -> Boundary:
    return Boundary(largest=largest, peak_at_largest=at, peak_above=above, usable_bytes=usable, limit=limit,
                    start=start, measured=dict(measured), complete=complete)


def predicted_start(predicted_peak: Callable[[int], int | None], usable: int, limit: int, low: int = 1) -> int | None:
    """The largest x in [low, limit] whose *predicted* peak fits (bisection on the prediction, no
    runs), or None where the prediction covers no value (it returns None) or not even `low` fits."""
    if predicted_peak(low) is None or predicted_peak(low) > usable:
        return None
    if predicted_peak(limit) is not None and predicted_peak(limit) <= usable:
        return limit
    a, b = low, limit  # predicted(a) fits, predicted(b) does not
    while b - a > 1:
        m = (a + b) // 2
        p = predicted_peak(m)
        if p is None:
            return None
        a, b = (m, b) if p <= usable else (a, m)
    return a


def predicts_peak(spec) -> bool:
    """Whether predicted_peak gives the corrected predictor's peak for `spec` (rather than a lower
    bound of it, or nothing)."""
    from verify.predict.memory import inputs_for, peak_covered

    try:
        s = inputs_for(spec.model)[0]
    except (ValueError, AttributeError, KeyError):
        return False
    return s.family is not None and peak_covered(s, spec) is None


def predicted_peak(spec, field: str):
    """x -> where the corrected predictor puts the peak of `spec` with `field` = x: its peak where
    it derives one (training; generation and the forward for the families with derived moments),
    else for generation its exact persistent terms (weights, buffers, KV cache: a lower bound of the
    peak, so the search starts at or above the answer); None where it covers neither."""
    from verify.predict.memory import inputs_for, predict

    try:
        s, T, dropout = inputs_for(spec.model)
        if s.family is None:
            return lambda x: None
    except (ValueError, AttributeError, KeyError):
        return lambda x: None

    def peak(x: int) -> int | None:
        pred = predict(s, dataclasses.replace(spec, **{field: x}), T, dropout)
        if pred.peak_bytes is not None:
            return pred.peak_bytes
        if spec.mode == "generate":
            return sum(pred.total(k) for k in ("params", "buffers", "kv_cache"))
        return None

    return peak

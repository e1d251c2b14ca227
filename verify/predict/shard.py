"""Per-rank memory at other world sizes, from one measured step: the exact persistent part by the
closed form (verify.formulas.shard), the rest of each stretch of the step carried over; and the
search for the smallest N that fits a GPU, whose answer is confirmed by measurements the caller
supplies (`measure`: a ShardSpec -> result function, verify.measure.shard.measure_shard).

Pure arithmetic on measured results; nothing here builds a module or runs a step itself.
"""

from __future__ import annotations

import math
from dataclasses import replace

from verify.formulas import shard as F
from verify.units import dtype_bytes

# phases whose remainder is per shard: the optimizer step, where activations are gone and what
# is left beyond the state is the foreach optimizer's intermediate lists, one entry per shard
PHASE_PER_SHARD = ("optimizer",)


def closed_form_persistent(spec, shapes: list[tuple[int, ...]], world_size: int | None = None) -> dict:
    """Rank 0's exact persistent bytes (terms params, grads, optimizer) for the ShardSpec `spec` at
    `world_size` (default: the spec's)."""
    return F.persistent_per_rank(
        shapes, world_size or spec.world_size, spec.strategy, mode=spec.mode, precision=spec.precision,
        dtype_bytes=dtype_bytes(spec.dtype), optimizer=spec.optimizer,
    )


def extrapolated_peak(result: dict, world_size: int) -> int:
    """Per-rank peak at `world_size` from a measure_shard result at another N.

    The measured step is cut into stretches between phase changes and gradient allocations
    (per_rank["segments"]). In each, the peak is split into its exactly known persistent part,
    recomputed at `world_size` by the closed form the tests prove exact (parameters, optimizer
    state, and the gradients allocated so far, by their shapes in per_rank["grad_order"]), and
    a remainder R. Outside the optimizer step R (activations, gathered layers and their
    unsharded gradients, KV cache) does not depend on N and is kept; in the optimizer step R is
    the foreach temporaries, which are per shard, and is scaled with the shard size. Equal to
    the measurement at its own N; `min_world_size` confirms the N this gives by measuring it."""
    from verify.measure.shard import ShardSpec

    spec = ShardSpec(**result["spec"])
    shapes = [tuple(s) for s in result["param_shapes"]]
    pr = result["per_rank"]
    order = [tuple(s) for s in pr["grad_order"]]

    measured, wanted = closed_form_persistent(spec, shapes), closed_form_persistent(spec, shapes, world_size)

    def persistent(terms: dict, n: int, grads_live: int) -> int:
        grads = closed_form_persistent(spec, order[:grads_live], n)["grads"] if grads_live else 0
        return terms["params"] + terms["optimizer"] + grads

    ratio = wanted["params"] / max(1, measured["params"])
    best = 0
    for seg in pr["segments"]:
        rest = seg["peak"] - persistent(measured, spec.world_size, seg["events_before"])
        if seg["phase"] in PHASE_PER_SHARD:
            rest = math.ceil(rest * ratio)
        best = max(best, persistent(wanted, world_size, seg["events_before"]) + rest)
    return best


def min_world_size(spec, gpu_bytes: int, measure, reference: dict | None = None, reference_n: int = 2, max_n: int = 1024,
                   confirm: bool = True, max_confirm_runs: int = 4) -> dict:
    """Smallest N whose per-rank peak fits `gpu_bytes`.

    One measurement at `reference_n` (or `reference`, a result of the same spec at some N) gives
    the per-rank peak; the exact persistent part is carried to every N in 1..max_n
    (`extrapolated_peak`) to find a candidate N*; with `confirm`, N* is then measured by
    `measure(spec)`, and N*-1 too, stepping while the measurement disagrees (at most
    `max_confirm_runs` extra runs). `min_world_size` is measured when `confirmed`."""
    ref = reference or measure(replace(spec, world_size=reference_n))
    reference_n = ref["spec"]["world_size"]
    measured = {reference_n: ref["per_rank"]["peak_bytes"]}
    predicted_n = F.smallest_fitting(lambda n: extrapolated_peak(ref, n), gpu_bytes, max_n)
    out = {"spec": spec.as_dict(), "gpu_bytes": gpu_bytes, "reference_n": reference_n, "predicted_min": predicted_n,
           "min_world_size": predicted_n, "confirmed": False, "measured_peaks": measured,
           "extrapolated_peak_at_min": extrapolated_peak(ref, predicted_n) if predicted_n else None}
    if not confirm or predicted_n is None:
        return out

    def fits(n: int) -> bool:
        if n not in measured:
            measured[n] = measure(replace(spec, world_size=n))["per_rank"]["peak_bytes"]
        return measured[n] <= gpu_bytes

    n, runs = predicted_n, 0
    while runs < max_confirm_runs:
        runs += 1
        if not fits(n):
            if n >= max_n:
                out["min_world_size"] = None
                return out
            n += 1
            continue
        if n == 1 or not fits(n - 1):
            out.update(min_world_size=n, confirmed=True)
            return out
        n -= 1
    out["min_world_size"] = n
    return out


def sweep_rows(references: dict[str, dict], world_sizes=(1, 2, 4, 8, 16, 32, 64, 128)) -> list[dict]:
    """Per-rank peak against N for each strategy, from one measured result per strategy
    (`references`: strategy -> measure_shard result), carried to the other N. Rows: model,
    strategy, world_size, mode, total_params, batch, seq, checkpointing, peak_bytes,
    persistent_bytes, measured (True only for the measured point)."""
    from verify.measure.shard import ShardSpec

    rows = []
    for strategy, ref in references.items():
        spec = ShardSpec(**ref["spec"])
        shapes = [tuple(s) for s in ref["param_shapes"]]
        for n in world_sizes:
            rows.append({
                "model": spec.model, "strategy": strategy, "world_size": n, "mode": spec.mode, "total_params": ref["total_params"],
                "batch": spec.batch, "seq": spec.seq, "checkpointing": spec.checkpointing,
                "peak_bytes": ref["per_rank"]["peak_bytes"] if n == spec.world_size else extrapolated_peak(ref, n),
                "persistent_bytes": sum(closed_form_persistent(spec, shapes, n).values()), "measured": n == spec.world_size,
            })
    return rows

"""Sweeps of fake-backend runs that feed the ledger (B2, B5, T1-T5, I1-I4) and the predictor:
activations against S (eager vs SDPA), B, L and h; checkpointing on and off; generation peak
against training peak. Each returns data (lists of dicts of ints), never prints.
"""

from __future__ import annotations

import dataclasses

from verify.measure.memory import MemoryResult, MemorySpec

FIELDS = ("params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes", "kv_cache_bytes", "transient_bytes",
          "peak_bytes", "buffers_bytes")


def config_with(model: str, **overrides):
    """The bundled config of `model` with some fields replaced (num_hidden_layers, hidden_size,
    vocab_size, ...): a new architecture point built from the same family."""
    from verify.configs import load_config

    config = load_config(model)
    for k, v in overrides.items():
        if not hasattr(config, k):
            raise ValueError(f"{model}: config has no field {k!r}")
        setattr(config, k, v)
    return config


def measure(spec: MemorySpec, **overrides) -> MemoryResult:
    """One fake run of `spec`, with config fields overridden if any are given."""
    from verify.measure.fake import run

    return run(spec, device="fake", config=config_with(spec.model, **overrides) if overrides else None)


def row(result: MemoryResult, **keys) -> dict:
    """The categories of a result as a flat dict, with the swept values in front."""
    return {**keys, **{f: getattr(result, f) for f in FIELDS}, "peak_phase": result.peak_phase}


def over(spec: MemorySpec, field: str, values, **overrides) -> list[dict]:
    """Vary one MemorySpec field (batch, seq, attn, checkpointing, dtype, ...)."""
    return [row(measure(dataclasses.replace(spec, **{field: v}), **overrides), **{field: v}) for v in values]


def over_config(spec: MemorySpec, field: str, values) -> list[dict]:
    """Vary one config field (num_hidden_layers, hidden_size, ...) of the spec's model."""
    return [row(measure(spec, **{field: v}), **{field: v}) for v in values]


def weights_bytes(model: str, dtype: str, **overrides) -> int:
    """Bytes of the materialized weights of `model` in `dtype` (fake tensors, tied weights once)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from verify.build import build, parse_dtype
    from verify.configs import load_config
    from verify.measure.memory import Category
    from verify.measure.tracker import Tracker

    config = config_with(model, **overrides) if overrides else load_config(model)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    m = build(config, device="fake", dtype=parse_dtype(dtype), fake_mode=mode)
    with mode, Tracker() as tr:
        tr.add([p for p in m.parameters()], Category.PARAMS)
    return tr.bytes(Category.PARAMS)


def slope(points: list[tuple[int, int]]) -> dict:
    """First and second differences of (x, y) points at equally spaced x: linear data has a zero
    second difference, quadratic data a constant non-zero one."""
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    first = [(ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i]) for i in range(len(ys) - 1)]
    second = [ys[i + 2] - 2 * ys[i + 1] + ys[i] for i in range(len(ys) - 2)]
    return {"bytes_per_unit": first, "second_difference": second}

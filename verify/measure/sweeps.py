"""Helpers for the sweeps of fake-backend runs that feed the ledger (verify/claims/memory.py: B2,
B5, T1-T5, I1-I4) and the predictor's tests: one run with config fields overridden (L, h, V,
dropout), the bytes of materialized weights, and the differences that tell linear from quadratic
growth. Each returns data, never prints.
"""

from __future__ import annotations

from verify.measure.memory import MemoryResult, MemorySpec


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
    """One run of `spec` on the backend it names, with config fields overridden if any are given."""
    from verify.measure.memory import measure as on_backend

    return on_backend(spec, config=config_with(spec.model, **overrides) if overrides else None)


def weights_bytes(model: str, dtype: str, **overrides) -> int:
    """Bytes of the materialized weights of `model` in `dtype` (fake tensors, tied weights once)."""
    from verify.build import build
    from verify.configs import load_config
    from verify.measure.memory import Category
    from verify.measure.tracker import Tracker
    from verify.torchapi import fake_mode
    from verify.units import torch_dtype

    config = config_with(model, **overrides) if overrides else load_config(model)
    mode = fake_mode()
    m = build(config, device="fake", dtype=torch_dtype(dtype), fake_mode=mode)
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

"""The one table of units and dtypes. Bytes and counts stay ints until they are shown; shown sizes
say GB (1e9) or GiB (2^30), never "G". Pure: torch is imported only by `torch_dtype`, when asked."""

from __future__ import annotations

UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
GB = UNITS["GB"]  # 10^9 bytes
GiB = UNITS["GiB"]  # 2^30 bytes

DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}  # bytes per element of the float dtypes a run can pick
DTYPE_NAMES = tuple(DTYPE_BYTES)
FP32 = DTYPE_BYTES["fp32"]  # fp32 master weights, fp32 statistics, Adam's step counters
INDEX_BYTES = 8  # token ids, labels and position ids are int64
PRECISIONS = ("pure", "mixed")  # pure: every tensor in the dtype; mixed: fp32 weights + autocast to the dtype
DEFAULT_PRECISION = "pure"  # every command's and spec's default (README, "Defaults"): transformers 5 loads a
# checkpoint in its own dtype (from_pretrained's dtype="auto": bf16 for Llama 3) and Trainer(bf16=True) then
# steps those bf16 weights, so gradients and AdamW state are bf16 too; fp32 master weights: "mixed"


def dtype_bytes(name: str) -> int:
    """Bytes per element of the dtype `name` (fp32, fp16, bf16)."""
    try:
        return DTYPE_BYTES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {', '.join(DTYPE_NAMES)}") from None


def weight_bytes(dtype: str, precision: str = "pure") -> int:
    """Bytes of one stored weight (and of its gradient and each Adam moment): fp32 master weights
    under mixed precision, else the dtype's own."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return FP32 if precision == "mixed" else dtype_bytes(dtype)


def torch_dtype(name: str):
    """The torch.dtype of `name` (imports torch)."""
    import torch

    dtype_bytes(name)  # one error message for an unknown name
    return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[name]


def weight_dtype(dtype: str, precision: str = "pure"):
    """The torch.dtype weights are built in: fp32 under mixed precision, else `dtype`."""
    return torch_dtype("fp32" if precision == "mixed" else dtype)


def in_unit(nbytes: int | float, unit: str) -> float:
    return nbytes / UNITS[unit]


def fmt_bytes(nbytes: int | float | None, unit: str = "GB", digits: int = 3) -> str:
    """12_345_678_901 -> '12.346 GB'."""
    if nbytes is None:
        return "-"
    return f"{in_unit(nbytes, unit):,.{digits}f} {unit}"


def fmt_gb_gib(nbytes: int | float | None) -> str:
    """A size in both units: '13.477 GB (12.551 GiB)'."""
    return f"{fmt_bytes(nbytes, 'GB')} ({fmt_bytes(nbytes, 'GiB')})"


def fmt_count(n: int | float | None) -> str:
    """Exact count with thousands separators and a short form: '6,738,415,616 (6.74B)'."""
    if n is None:
        return "-"
    for div, suffix in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "K")):
        if abs(n) >= div:
            return f"{n:,.0f} ({n / div:.3g}{suffix})"
    return f"{n:,.0f}"


def rel_error(predicted: float | None, measured: float | None) -> float | None:
    """Signed relative error of a prediction against a measurement: (predicted - measured) / measured."""
    if predicted is None or measured is None:
        return None
    if measured == 0:
        return 0.0 if predicted == 0 else float("inf")
    return (predicted - measured) / measured


def fmt_rel(r: float | None) -> str:
    if r is None:
        return "-"
    if r == 0:
        return "0 (exact)"
    return f"{r:+,.0%}" if abs(r) >= 10 else f"{r:+.2%}"

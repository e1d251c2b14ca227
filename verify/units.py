"""The one unit table. Bytes and counts stay ints until they are shown; shown sizes say GB (1e9)
or GiB (2^30), never "G"."""

from __future__ import annotations

UNITS = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


def in_unit(nbytes: int | float, unit: str) -> float:
    return nbytes / UNITS[unit]


def fmt_bytes(nbytes: int | float | None, unit: str = "GB", digits: int = 3) -> str:
    """12_345_678_901 -> '12.346 GB'."""
    if nbytes is None:
        return "-"
    return f"{in_unit(nbytes, unit):,.{digits}f} {unit}"


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

"""Floating-point formats measured from torch (N1, B1, B4): torch.finfo and the bit patterns
of real tensors, and element sizes."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from verify.units import DTYPE_NAMES, torch_dtype

INT_VIEW = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}  # same-width integer to read bits


@dataclass
class FloatFormat:
    """One floating-point format as torch stores it."""

    name: str  # fp32 | fp16 | bf16
    bits: int  # total bits (torch.finfo.bits)
    bytes: int  # element size of a tensor of this dtype
    sign: int  # sign bits: the bits -0.0 has set
    exponent: int  # exponent bits: the bits +inf has set
    fraction: int  # fraction bits: the bits neither sets (the rest)
    bias: int  # exponent bias, 2^(exponent-1) - 1, checked against finfo.max
    max: float  # largest finite value (torch.finfo.max)
    min: float  # most negative finite value (torch.finfo.min); what the seed calls the minimum
    tiny: float  # smallest positive normal value (torch.finfo.smallest_normal)
    subnormal: float  # smallest positive subnormal value: the bit pattern 0...01
    eps: float  # 1.0's distance to the next value (torch.finfo.eps)
    max_bits: str  # bit pattern of finfo.max, sign|exponent|fraction

    def as_dict(self) -> dict:
        return asdict(self)


def _pattern(x: torch.Tensor) -> int:
    """The stored bits of a one-element tensor, as an unsigned int."""
    n = x.element_size()
    v = int(x.view(INT_VIEW[n]).item())
    return v & ((1 << (8 * n)) - 1)


def float_format(name: str) -> FloatFormat:
    """Measure one format: bit counts from the patterns of -0.0 and +inf, range from finfo,
    the smallest subnormal by reinterpreting the integer 1 as that dtype."""
    dtype = torch_dtype(name)
    fi = torch.finfo(dtype)
    n = torch.empty((), dtype=dtype).element_size()
    sign_bits = bin(_pattern(torch.tensor(-0.0, dtype=dtype))).count("1")
    exp_bits = bin(_pattern(torch.tensor(float("inf"), dtype=dtype))).count("1")
    frac_bits = 8 * n - sign_bits - exp_bits
    one = torch.tensor(1, dtype=INT_VIEW[n]).view(dtype)
    pattern = format(_pattern(torch.tensor(fi.max, dtype=dtype)), f"0{8 * n}b")
    bias = 2 ** (exp_bits - 1) - 1
    # finfo.max decoded from its own fields must equal finfo.max: checks the split measured above
    e_field, f_field = int(pattern[1 : 1 + exp_bits], 2), int(pattern[1 + exp_bits :], 2)
    decoded = 2.0 ** (e_field - bias) * (1 + f_field / 2**frac_bits)
    if decoded != fi.max:
        raise RuntimeError(f"{name}: fields of finfo.max decode to {decoded}, not {fi.max}")
    return FloatFormat(
        name=name, bits=fi.bits, bytes=n, sign=sign_bits, exponent=exp_bits, fraction=frac_bits, bias=bias,
        max=fi.max, min=fi.min, tiny=fi.smallest_normal, subnormal=float(one.item()), eps=fi.eps,
        max_bits=f"{pattern[0]}|{pattern[1:1 + exp_bits]}|{pattern[1 + exp_bits:]}",
    )


def float_formats() -> dict[str, FloatFormat]:
    return {name: float_format(name) for name in DTYPE_NAMES}


def element_bytes() -> dict[str, int]:
    """Bytes of one element of each dtype a checkpoint may hold, from real tensors."""
    dtypes = {**{name: torch_dtype(name) for name in DTYPE_NAMES}, "int8": torch.int8, "uint8 (two int4)": torch.uint8}
    return {name: torch.empty(1, dtype=dt).element_size() for name, dt in dtypes.items()}

"""Pieces several families' blocks share, as closed forms: parameters of an attention block, an
MLP and a norm, and the bytes of RoPE's frequency buffers. Pure functions of ints; the family
modules compose them into their exact counts. Nothing here imports torch.

Symbols: h hidden size, q = a·d_head query width, kv = n_kv·d_head key/value width, f MLP inner
size.
"""

from __future__ import annotations

from verify.units import FP32  # noqa: F401  (bytes of an fp32 element; the family modules import it from here)


def attention(h: int, q: int, kv: int, qkv_bias: bool, o_bias: bool) -> int:
    """q (h×q), k and v (h×kv each), o (q×h), with q+2kv biases on q, k, v and h on o where the
    block has them; a fused qkv projection (h × (q+2kv)) holds the same."""
    return h * q + 2 * h * kv + q * h + (q + 2 * kv if qkv_bias else 0) + (h if o_bias else 0)


def mlp(h: int, f: int, matrices: int, bias: bool) -> int:
    """An MLP of 2 (up, down) or 3 (gate, up, down) matrices h×f, with f biases on each matrix
    into f and h on the one out of it where the block has them."""
    return matrices * h * f + ((matrices - 1) * f + h if bias else 0)


def norm(width: int, kind: str) -> int:
    """One norm over `width` features: LayerNorm scale and shift (2·width), RMSNorm scale (width),
    a LayerNorm without elementwise affine nothing."""
    return {"layernorm": 2, "rmsnorm": 1, "layernorm-no-affine": 0}[kind] * width


def rope_inv_freq(rotary_dim: int) -> dict[str, int]:
    """RoPE's inverse frequencies, kept twice (inv_freq and original_inv_freq), fp32,
    rotary_dim/2 each (rotary_dim = d_head where RoPE rotates the whole head)."""
    return {"inv_freq, original_inv_freq 2·(d/2)·4": 2 * (rotary_dim // 2) * FP32}

"""Parameter-count formulas: the seeds' (claims P1-P13) and the exact closed form.

Pure functions of ints; each returns a dict of named terms (parameter counts) whose sum is
the formula's figure. Symbols: h hidden size, L layers, V vocabulary, N max positions,
a heads, d_ff MLP inner size. Nothing here imports torch.
"""

from __future__ import annotations


def total(terms: dict[str, int]) -> int:
    return sum(terms.values())


def attention_4h2(h: int) -> dict[str, int]:
    """P1 (seed 004): "无论单头还是多头,自注意力层的参数量都可以近似为 4h²" (ignoring biases).

    Q, K, V projections h×h each, output projection h×h; the head count does not enter.
    """
    return {"W_Q": h * h, "W_K": h * h, "W_V": h * h, "W_O": h * h}


def mlp_8h2(h: int) -> dict[str, int]:
    """P2 (seed 004): "MLP 层的总参数量为 8h²": h→4h then 4h→h, biases ignored."""
    return {"W_up (h x 4h)": 4 * h * h, "W_down (4h x h)": 4 * h * h}


def layernorm_2h(h: int, L: int) -> dict[str, int]:
    """P3 (seed 004): each LayerNorm has gamma and beta of size h; L layers hold (2L+1)·2h."""
    return {"gamma (2L+1)h": (2 * L + 1) * h, "beta (2L+1)h": (2 * L + 1) * h}


def embedding_Vh(V: int, h: int) -> dict[str, int]:
    """P4 (seed 004): "词嵌入层的参数量为 Vh"."""
    return {"Vh": V * h}


def output_head(V: int, h: int, tied: bool) -> dict[str, int]:
    """P5 (seed 004): a tied output layer adds nothing; an untied one adds Vh."""
    return {"Vh (untied head)": 0 if tied else V * h}


def positions_Nh(N: int, h: int, kind: str) -> dict[str, int]:
    """P6 (seed 004): learned positions add N·h; RoPE and ALiBi add no trainable parameters."""
    return {"Nh": N * h if kind == "learned" else 0}


def total_full(L: int, h: int, V: int) -> dict[str, int]:
    """P7 (seed 004): "总参数量 ≈ L * (12h² + 4h) + Vh + 2h" (tied head, no positions, no biases)."""
    return {"12Lh^2": 12 * L * h * h, "4Lh": 4 * L * h, "Vh": V * h, "2h": 2 * h}


def total_approx(L: int, h: int, V: int) -> dict[str, int]:
    """P7/P8 (seed 004): "总参数量 ≈ 12Lh² + Vh"; for LLaMA-7B 12·32·4096²+32000·4096 ≈ 6.55B."""
    return {"12Lh^2": 12 * L * h * h, "Vh": V * h}


def seed001_layer(d: int, d_ff: int) -> dict[str, int]:
    """P10/P11 (seed 001): one layer = attention 4·d_model² + FFN (2·d_model·d_ff + d_ff + d_model)
    + 2 LayerNorms of 2·d_model. The FFN term counts both FFN biases; attention counts none."""
    return {
        "attention 4d^2": 4 * d * d,
        "FFN 2*d*d_ff": 2 * d * d_ff,
        "FFN biases d_ff + d": d_ff + d,
        "2 LayerNorms 2*2d": 2 * 2 * d,
    }


def seed001_total(d: int, d_ff: int, n_layers: int, V: int) -> dict[str, int]:
    """P10 (seed 001): total = N·layer + vocab_size·d_model (= 123,383,808 for d=768, 12 layers,
    V=50,000); no output head, no positions, no final LayerNorm."""
    return {"N x layer": n_layers * total(seed001_layer(d, d_ff)), "embedding V*d": V * d}


def seed001_gpt3_layer(d: int, d_ff: int) -> dict[str, int]:
    """P12 (seed 001): "总参数 8 * 12288^2 + 8 * 12288 * 49152 + 2 * 12288 ≈ 1.1 亿" per GPT-3 layer,
    "1.1亿*96 = 105.6亿" in all. The terms as written (the '+' signs were lost in the seed)."""
    return {"8d^2": 8 * d * d, "8*d*d_ff": 8 * d * d_ff, "2d": 2 * d}


def gpt2_block(d: int, d_ff: int) -> dict[str, int]:
    """P11/P12, corrected: one GPT-2-style block counted exactly: attention 4d² + 4d (q, k, v, o and
    their biases), MLP 2·d·d_ff + d_ff + d, two LayerNorms 2·2d; with d_ff = 4d, 12d² + 13d."""
    return {"attention 4d²+4d": 4 * d * d + 4 * d, "MLP 2·d·d_ff + d_ff + d": 2 * d * d_ff + d_ff + d, "2 LayerNorms 4d": 4 * d}


def exact(s) -> dict[str, int]:
    """The exact closed form for a normalized Shape `s` (verify.configs.Shape), term by term.

    attention: q h·a·d_head, k and v h·kv·d_head each, o a·d_head·h, plus the biases the
    architecture has; MLP: 2 or 3 (gated) matrices h·d_ff per expert, biases, router h·E;
    norms: 2 per layer + final (+ BLOOM's embedding norm), h each for RMSNorm, 2h for LayerNorm.
    """
    q = s.heads * s.head_dim
    kv = s.kv_heads * s.head_dim
    attn = s.h * q + 2 * s.h * kv + q * s.h
    attn += (q + 2 * kv if s.attn_bias else 0) + (s.h if s.o_bias else 0)
    mats = 3 if s.gated_mlp else 2
    mlp = mats * s.h * s.ffn + ((mats - 1) * s.ffn + s.h if s.mlp_bias else 0)
    per_norm = 2 * s.h if s.norm == "layernorm" else s.h
    return {
        "embedding Vh": s.V * s.h,
        "positions Nh": s.max_positions * s.h if s.positions == "learned" else 0,
        "attention": s.L * attn,
        "mlp": s.L * mlp * s.experts,
        "router": s.L * s.h * s.experts if s.experts > 1 else 0,
        "norms": (2 * s.L + 1 + (1 if s.embed_norm else 0)) * per_norm,
        "output head": 0 if s.tied else s.V * s.h,
    }


def p7_corrections(s) -> dict[str, int]:
    """What L(12h²+4h)+Vh+2h misses for Shape `s`, as named signed deltas.

    Applied in order, each delta moves the seed's formula one step towards `exact(s)`;
    seed + sum(deltas) == sum(exact(s)) for every architecture the Shape describes.
    """
    h, L = s.h, s.L
    q = s.heads * s.head_dim
    kv = s.kv_heads * s.head_dim
    mats = 3 if s.gated_mlp else 2
    per_norm = 2 * h if s.norm == "layernorm" else h
    d = {
        "head_dim x heads != h": L * (2 * h * q - 2 * h * h),
        "GQA/MQA k,v (fewer kv heads)": L * (2 * h * kv - 2 * h * q),
        "MLP shape (SwiGLU / d_ff != 4h)": L * (mats * h * s.ffn - 8 * h * h),
        "MoE experts and router": L * ((s.experts - 1) * mats * h * s.ffn + (h * s.experts if s.experts > 1 else 0)),
        "biases": L * (
            (q + 2 * kv if s.attn_bias else 0)
            + (h if s.o_bias else 0)
            + s.experts * ((mats - 1) * s.ffn + h if s.mlp_bias else 0)
        ),
        "norms (RMSNorm has no beta; extra norms)": (2 * L + 1 + (1 if s.embed_norm else 0)) * per_norm
        - (4 * L * h + 2 * h),
        "learned positions Nh": s.max_positions * h if s.positions == "learned" else 0,
        "untied output head Vh": 0 if s.tied else s.V * h,
    }
    return {k: v for k, v in d.items() if v}

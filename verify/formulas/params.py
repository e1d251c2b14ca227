"""Parameter-count formulas: the seeds' (claims P1-P13) and the exact closed form.

Pure functions of ints; each returns a dict of named terms (parameter counts) whose sum is
the formula's figure. Symbols: h hidden size, L layers, V vocabulary, N max positions,
a heads, d_ff MLP inner size. Nothing here imports torch.
"""

from __future__ import annotations

from verify.formulas import total  # noqa: F401  (callers sum these formulas' terms with it)


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
    """The exact closed form for a normalized Shape `s` (verify.configs.Shape), term by term: its
    family's count (verify/families), in the terms embedding, positions, attention, mlp (all
    experts), router, norms and output head (and OPT's embedding projections). A model_type the
    registry does not cover has none: ValueError (count it by introspection)."""
    from verify.families import family_of, not_in_registry

    family = family_of(s.model_type)
    if family is None:
        raise ValueError(not_in_registry(s.model_type))
    return family.params(s)


def p7_corrections(s) -> dict[str, int]:
    """What L(12h²+4h)+Vh+2h misses for Shape `s`, as named signed deltas.

    Each delta is read off the Shape's fields alone (not the family's closed form): applied in
    order, they move the seed's formula one step towards the module; seed + sum(deltas) ==
    sum(exact(s)) for every family in the registry (tests/test_params.py checks both against
    introspection). A Shape of a family the registry does not cover has no block fields:
    ValueError."""
    if s.family is None:
        from verify.families import not_in_registry

        raise ValueError(not_in_registry(s.model_type))
    h, L, V, e = s.h, s.L, s.V, s.embed_dim
    q = s.heads * s.head_dim
    kv = s.kv_heads * s.head_dim
    mats = 3 if s.gated_mlp else 2
    per_feature = {"layernorm": 2, "rmsnorm": 1}.get(s.norm, 0)  # parameters per normalized feature
    norms = L * s.norms_per_layer + (1 if s.final_norm else 0) + (1 if s.embed_norm else 0)
    d = {
        "head_dim x heads != h": L * (4 * h * q - 4 * h * h),  # q, k, v, o of a·d_head heads
        "GQA/MQA k,v (fewer kv heads)": L * (2 * h * kv - 2 * h * q),
        "MLP shape (SwiGLU / d_ff != 4h)": L * (mats * h * s.ffn - 8 * h * h),
        "MoE experts and router": L * ((s.experts - 1) * mats * h * s.ffn + (h * s.experts if s.experts > 1 else 0)),
        "biases": L * (
            (q + 2 * kv if s.attn_bias else 0)
            + (h if s.o_bias else 0)
            + s.experts * ((mats - 1) * s.ffn + h if s.mlp_bias else 0)
        ),
        "norms (RMSNorm has no beta; extra norms)": norms * per_feature * h
        + (L * 2 * per_feature * (h // s.heads) if s.qk_norm else 0)
        - (4 * L * h + 2 * h),
        "learned positions Nh": s.position_rows * h if s.positions == "learned" else 0,
        "embedding width e != h (OPT's project_in/out)": V * e - V * h + (2 * e * h if e != h else 0),
        "untied output head Vh": 0 if s.tied else V * e,
        "output head bias V": V if s.head_bias else 0,
    }
    return {k: v for k, v in d.items() if v}

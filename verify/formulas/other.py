"""The seeds' formulas for number formats, checkpoint sizes, sampling, LoRA, scaling and the
embedding padding (claims N1 B1 B3 B4 B6 S2 S3 S4 L1 T7 Q1 P14).

Pure functions, no torch: each returns a dict of named terms (or, for the sampling procedure,
the kept token ids and their probabilities) computed the way the seed says. The measurements
in verify/measure/ are compared against these.
"""

from __future__ import annotations

import math

from verify.formulas import total  # noqa: F401  (callers sum these formulas' terms with it)


# --- N1, B1: number formats ------------------------------------------------------------------


def float_formats_table() -> dict[str, dict[str, float]]:
    """N1 (seed 002): the seed's table of formats, "符号位 | 指数位 | 小数位 | 总位数 | 字节数 | 表示范围".

    fp32: 1/8/23 bits, 32, 4 bytes, [-3.4e38, 3.4e38]; fp16: 1/5/10, 16, 2, [-65504, 65504];
    bf16: 1/8/7, 16, 2, [-3.39e38, 3.39e38]. "max" is the seed's upper bound, "min" its lower
    bound (the seed's "最小数据", which is the most negative finite value, not the smallest positive).
    """
    return {
        "fp32": {"sign": 1, "exponent": 8, "fraction": 23, "bits": 32, "bytes": 4, "max": 3.4e38, "min": -3.4e38},
        "fp16": {"sign": 1, "exponent": 5, "fraction": 10, "bits": 16, "bytes": 2, "max": 65504.0, "min": -65504.0},
        "bf16": {"sign": 1, "exponent": 8, "fraction": 7, "bits": 16, "bytes": 2, "max": 3.39e38, "min": -3.39e38},
    }


def fp16_max_seed(exponent_field: int = 30, bias: int = 15, fraction_field: int = 1023, fraction_bits: int = 10) -> dict[str, float]:
    """N1 (seed 002): fp16 maximum = (-1)^0 × 2^(30-15) × (1 + 1023/1024).

    exponent_field: the largest finite biased exponent (11110b = 30); bias 15; fraction_field:
    all ten fraction bits set (1023). Returns the two factors; their product is the maximum.
    """
    return {"2^(e-bias)": 2.0 ** (exponent_field - bias), "1+f/2^m": 1 + fraction_field / 2**fraction_bits}


def bits_per_parameter() -> dict[str, int]:
    """B1 (seed 003): "Float: 32-bit ... 4 bytes; Half/BF16: 16-bit, 2 bytes; Int8: 1 byte; Int4: 0.5 bytes".

    In bits (ints): fp32 32, fp16 16, bf16 16, int8 8, int4 4; bytes = bits / 8.
    """
    return {"fp32": 32, "fp16": 16, "bf16": 16, "int8": 8, "int4": 4}


# --- B4: units ---------------------------------------------------------------------------------


def fp16_model_bytes(params_billion: float, bytes_per_param: int = 2) -> dict[str, int]:
    """B4 (seed 002): "14B 的大模型, 以fp16方式加载后 ... 14 * 2 = 28G", "除以 1024 / 1024 / 1024".

    P_B billions of parameters × bytes per parameter = bytes (an int); the seed then calls the
    result "28G" whether it divides by 10^9 (GB) or by 1024³ (GiB).
    """
    return {"P_B·1e9·bytes": round(params_billion * 10**9 * bytes_per_param)}


# --- B3, B6: checkpoint sizes --------------------------------------------------------------------


def checkpoint_estimate(params: int, bytes_per_param: int = 2) -> dict[str, int]:
    """B3 (seed 004): "使用 FP16 存储时,LLaMA-7B 的大小理论上为: 7B * 2 bytes = 14GB".

    params: the parameter count N the estimate uses (the seed: 7e9); bytes = 2N.
    """
    return {"N·2": params * bytes_per_param}


def safetensors_file_bytes(header_json_bytes: int, tensor_bytes: int) -> dict[str, int]:
    """B3: the size of a .safetensors file: an 8-byte little-endian header length, the JSON
    header (padded with spaces to a multiple of 8 by the writer), then every tensor's bytes.

    header_json_bytes: length of the JSON header as written (padding included);
    tensor_bytes: sum over tensors of numel × element size.
    """
    return {"length prefix": 8, "JSON header": header_json_bytes, "tensor data": tensor_bytes}


def norms_fp32_extra(norm_params: int, half_bytes: int = 2, full_bytes: int = 4) -> dict[str, int]:
    """B6 (seed 004): "一些参数 (如 Layer Normalization 的 gamma 和 beta) 可能会以 FP32 格式存储".

    norm_params: parameters of all norm layers; keeping them at full_bytes instead of half_bytes
    adds norm_params × (full_bytes - half_bytes) bytes.
    """
    return {"norms·(4-2)": norm_params * (full_bytes - half_bytes)}


# --- S2-S4: sampling -----------------------------------------------------------------------------


def softmax(logits: list[float]) -> list[float]:
    m = max(logits)
    e = [math.exp(x - m) if x != -math.inf else 0.0 for x in logits]
    s = sum(e)
    return [x / s for x in e]


def seed_sampling(logits: list[float], temperature: float, top_k: int, top_p: float) -> dict[int, float]:
    """S1-S4 (seed 003), the procedure as the seed words it: "each log probability is divided by
    0.8 (Temperature) ... Top-K=36 means selecting the 36 [tokens] with the highest ... probability.
    Then, Top-P=0.7 applies filtering in this Top-K=36 set, keeping sorting from high to low
    probability until the cumulative probability reaches 0.7. Finally, this filtered set is
    renormalized".

    logits: the model's scores for one position; returns token id -> probability after the
    final renormalization (the kept set is its keys). Ties are broken by the lower token id.
    P = 0 keeps the single most likely token (the seed: "similar to greedy decoding").
    """
    scaled = [x / temperature for x in logits]
    order = sorted(range(len(scaled)), key=lambda i: (-scaled[i], i))
    top = order[: min(top_k, len(order))]
    probs = softmax([scaled[i] for i in top])  # renormalized inside the Top-K set
    kept, cum = [], 0.0
    for i, p in zip(top, probs):
        kept.append(i)
        cum += p
        if cum >= top_p:
            break
    final = softmax([scaled[i] for i in kept])
    return dict(zip(kept, final))


# --- L1: LoRA -------------------------------------------------------------------------------------


def lora_params(d_in: int, d_out: int, r: int) -> dict[str, int]:
    """L1 (seed 002): W is 1024×2048 (d_in × d_out), frozen; "A: 1024x32, B: 32x2048", only A and B
    are trained; output = input @ A @ B added; merged W' = W + ΔW with ΔW = A @ B.

    Returns the trainable terms A = d_in·r and B = r·d_out (the frozen W = d_in·d_out is not a term).
    """
    return {"A (d_in x r)": d_in * r, "B (r x d_out)": r * d_out}


# --- T7: scaling ------------------------------------------------------------------------------------


def scaling_multiplier(alpha: float = 0.07, improvement: float = 0.10) -> dict[str, float]:
    """T7 (seed 001): "性能 ∝ N^α ... α 约为 0.07 ... 为了实现 10% 的性能提升我们需要将参数数量增加
    10^(1/α) ≈ 3.7 倍".

    alpha: the scaling exponent α; improvement: the relative gain (0.10 for 10%). Returns the
    seed's written formula 10^(1/α) and the one performance ∝ N^α implies, (1 + gain)^(1/α).
    """
    return {"10^(1/α)": 10 ** (1 / alpha), "(1+gain)^(1/α)": (1 + improvement) ** (1 / alpha)}


# --- Q1: 13B int8 vs 7B bf16 --------------------------------------------------------------------------


def q1_weight_bytes(params_13b: int, params_7b: int) -> dict[str, int]:
    """Q1 (seed 003): "the 13B-int8 model is generally better than the 7B-BF16 model"; with B1's
    1 byte (int8) and 2 bytes (bf16) per parameter the memory sides are N_13B·1 and N_7B·2."""
    return {"13B int8: N·1": params_13b, "7B bf16: N·2": 2 * params_7b}


# --- P14: embedding padding -----------------------------------------------------------------------------


def power_of_two_alignment(n: int) -> dict[str, int]:
    """P14: the largest power of two dividing n (n = 2^k · odd); returns 2^k and the odd factor."""
    if n <= 0:
        raise ValueError(f"alignment needs a positive integer, got {n}")
    k = (n & -n).bit_length() - 1
    return {"2^k": 2**k, "odd factor": n >> k}


def embedding_padding(rows: int, tokenizer_entries: int, special_tokens: int) -> dict[str, int]:
    """P14 (seed 002): "Embedding(151936, 896) ... tokenizer.vocab_size >>> 151643".

    rows: embedding rows; tokenizer_entries: the tokenizer's regular vocabulary (ids 0..n-1);
    special_tokens: added tokens right after it. The rows past both are unused padding.
    """
    return {"regular tokens": tokenizer_entries, "special tokens": special_tokens,
            "unused rows": rows - tokenizer_entries - special_tokens}

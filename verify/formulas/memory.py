"""Memory formulas: the seeds' (claims B2, B5, T1-T4, I1-I4) and the exact closed forms of the
persistent categories. Pure functions of ints; each returns a dict of named terms in bytes whose
sum is the formula's figure. Nothing here imports torch.

Symbols: N parameters, T parameter tensors, p (or x, y) bytes per element, B (b) batch, S (s)
sequence length, D input length per sequence (= S), H (h) hidden size, L layers, V vocabulary,
a heads, n_kv key/value heads, d_head head dimension.
"""

from __future__ import annotations

from verify.units import FP32

STEP_BYTES = FP32  # Adam's per-tensor step counter: a 0-dim fp32 tensor
CPU_RNG_STATE_BYTES = 5056  # torch.get_rng_state(): the CPU generator's state (mt19937's 624 words and its
# normal-sampling cache), which torch.utils.checkpoint keeps per checkpointed layer; measured: tests/test_predict.py


# --- exact closed forms of the persistent categories ---------------------------------------


def weights(N: int, p: int) -> dict[str, int]:
    """B2/B5/I3: the bytes of N parameters stored in p bytes each (tied weights counted once)."""
    return {"N·p": N * p}


def gradients(N: int, p: int) -> dict[str, int]:
    """One gradient per parameter, in the parameter's dtype (p bytes)."""
    return {"N·p": N * p}


BNB_MIN_8BIT_SIZE = 4096  # bitsandbytes Optimizer2State: tensors with fewer elements keep fp32 state (min_8bit_size)
BNB_BLOCK = 256  # bitsandbytes' 8-bit optimizer state: one fp32 absmax per 256 elements (Optimizer2State.init_state)
BNB_QMAP = 256 * FP32  # one 256-entry fp32 quantization map (create_dynamic_map), shared by all tensors


def optimizer_state(N: int, T: int, p: int, optimizer: str, shapes: list[tuple[int, ...]] | None = None) -> dict[str, int]:
    """The optimizer's state kept between steps for N trainable parameters in T tensors of p bytes
    per element (`shapes`: the T tensors' shapes, needed where the state depends on them).

    adam, adamw, adamw-fused (torch.optim): exp_avg and exp_avg_sq in the parameter's dtype and one
      fp32 step counter per tensor (torch/optim/adam.py, Adam._init_group).
    adamw-8bit (bitsandbytes.optim.AdamW8bit; bitsandbytes/optim/optimizer.py,
      Optimizer2State.init_state): a tensor of n ≥ 4096 elements keeps state1 and state2 in uint8
      (n bytes each) and absmax1, absmax2 in fp32 (one per 256 elements each); a smaller tensor keeps
      state1 and state2 in fp32; the two 256-entry fp32 maps (qmap1 "dynamic", qmap2 "udynamic")
      are shared by every tensor; the step counter is a Python int.
    adafactor (torch.optim.Adafactor; torch/optim/_adafactor.py, Adafactor._init_group): for a
      tensor of 2 or more dimensions a row factor (the size without the last dimension) and a column
      factor (without the second-to-last) in the gradient's dtype; for a 1-D tensor the full
      variance; one fp32 step counter per tensor; no first moment.
    sgd-momentum (torch.optim.SGD, momentum > 0): one momentum buffer per parameter; sgd: nothing.
    """
    if optimizer in ("adam", "adamw", "adamw-fused"):
        return {"exp_avg N·p": N * p, "exp_avg_sq N·p": N * p, "step 4·T": STEP_BYTES * T}
    if optimizer == "sgd":
        return {}
    if optimizer == "sgd-momentum":
        return {"momentum_buffer N·p": N * p}
    if optimizer in ("adamw-8bit", "adafactor"):
        if shapes is None:
            raise ValueError(f"the state of {optimizer} depends on each tensor's shape; no shapes were given")
        if len(shapes) != T or sum(numel(s) for s in shapes) != N:
            raise ValueError(f"shapes hold {len(shapes)} tensors of {sum(numel(s) for s in shapes)} elements, not T = {T}, N = {N}")
        return _adamw_8bit(shapes) if optimizer == "adamw-8bit" else _adafactor(shapes, p)
    raise ValueError(f"unknown optimizer {optimizer!r}; choose adamw, adamw-fused, adamw-8bit, adafactor, adam, sgd or sgd-momentum")


def numel(shape: tuple[int, ...]) -> int:
    """Elements of a tensor of `shape`."""
    n = 1
    for d in shape:
        n *= d
    return n


def _adamw_8bit(shapes: list[tuple[int, ...]]) -> dict[str, int]:
    big = [numel(s) for s in shapes if numel(s) >= BNB_MIN_8BIT_SIZE]
    small = [numel(s) for s in shapes if numel(s) < BNB_MIN_8BIT_SIZE]
    return {
        "state1+state2 uint8 2·n (n ≥ 4096)": 2 * sum(big),
        "absmax1+absmax2 fp32 2·4·⌈n/256⌉": 2 * FP32 * sum(-(-n // BNB_BLOCK) for n in big),
        "state1+state2 fp32 2·4·n (n < 4096)": 2 * FP32 * sum(small),
        "qmap1+qmap2 2·256·4 (shared)": 2 * BNB_QMAP if big else 0,
    }


def _adafactor(shapes: list[tuple[int, ...]], p: int) -> dict[str, int]:
    matrices = [s for s in shapes if len(s) > 1]
    return {
        "row_var p·n/last": p * sum(numel(s) // s[-1] for s in matrices),
        "col_var p·n/second-to-last": p * sum(numel(s) // s[-2] for s in matrices),
        "variance p·n (1-D)": p * sum(numel(s) for s in shapes if len(s) <= 1),
        "step 4·T": STEP_BYTES * len(shapes),
    }


def bnb_4bit_weight(n: int, nested: bool, blocksize: int = 64) -> dict[str, int]:
    """bitsandbytes' storage of one n-element weight in 4 bits (functional.quantize_4bit with uint8
    storage, the layout its fake kernel declares in bitsandbytes/_ops.py): two values per byte, the
    16-entry fp32 code of NF4 (get_4bit_type) and one absmax per block of 64 weights: fp32, or,
    double-quantized (compress_statistics; quantize_blockwise of absmax − mean with blocks of 256),
    uint8 with one fp32 absmax per 256 blocks, the layer's own copy of the 256-entry fp32 dynamic
    code and the fp32 mean (offset)."""
    blocks = -(-n // blocksize)
    terms = {"packed ⌈n/2⌉": (n + 1) // 2, "code 16·4": 16 * FP32}
    if not nested:
        return {**terms, "absmax fp32 4·⌈n/64⌉": FP32 * blocks}
    return {**terms, "absmax uint8 ⌈n/64⌉": blocks, "nested absmax fp32 4·⌈blocks/256⌉": FP32 * -(-blocks // 256),
            "nested code 256·4": BNB_QMAP, "offset 4": FP32}


def bnb_int8_weight(rows: int, cols: int) -> dict[str, int]:
    """bitsandbytes' LLM.int8 storage of a rows × cols weight (Int8Params._quantize:
    int8_vectorwise_quant): the int8 matrix CB and one fp32 scale per row (SCB)."""
    return {"CB rows·cols": rows * cols, "SCB 4·rows": FP32 * rows}


def kv_cache(L: int, B: int, T: int, n_kv: int, d_head: int, p: int) -> dict[str, int]:
    """I4 (no seed states it): keys and values of every layer for T cached positions:
    2·L·B·T·n_kv·d_head·p bytes (GQA/MQA: n_kv < a)."""
    return {"K L·B·T·n_kv·d_head·p": L * B * T * n_kv * d_head * p, "V L·B·T·n_kv·d_head·p": L * B * T * n_kv * d_head * p}


def cached_positions(S: int, new_tokens: int) -> int:
    """Positions in the cache after `generate(max_new_tokens=new_tokens)` on an S-token prompt:
    the prompt plus every generated token but the last (which is never fed back)."""
    return S + max(new_tokens - 1, 0)


# --- the seeds' formulas --------------------------------------------------------------------


def t1_model_state(N: int, x: int, y: int) -> dict[str, int]:
    """T1 (seed 003): "(x+y+12) * model_size": x bytes of weights, y bytes of gradients and
    "generally 12 bytes" of fp32 optimizer state (master copy, momentum, variance) per parameter."""
    return {"x·N weights": x * N, "y·N gradients": y * N, "12·N optimizer": 12 * N}


def t2_steady(N: int, B: int, D: int) -> dict[str, int]:
    """T2 (seed 001): "M_steady = 16N + 8BD": fp32 weights 4N, Adam 8N, fp32 gradients 4N,
    int64 input 8BD (B batch, D input dimension: tokens per sequence)."""
    return {"4N weights": 4 * N, "8N Adam": 8 * N, "4N gradients": 4 * N, "8BD input": 8 * B * D}


def t3_activations(L: int, B: int, S: int, H: int, V: int) -> dict[str, int]:
    """T3 (seed 001): "M_act = L * (14E + 4BSS) + 6BSV" with E = BSH: per layer norms 4E, QKV 2E,
    attention matrix 4BSS, attention output 2E, MLP 2E + 8E (GELU) + 2E; logits 6BSV."""
    E = B * S * H
    return {"L·14E": L * 14 * E, "L·4BSS": L * 4 * B * S * S, "6BSV logits": 6 * B * S * V}


def t3_peak(N: int, L: int, B: int, S: int, H: int, V: int) -> dict[str, int]:
    """T3 (seed 001): "M_peak = M_steady + M_act + 4BSV", the 4BSV for "the extra allocation at
    the start of the backward pass"."""
    return {**t2_steady(N, B, S), **t3_activations(L, B, S, H, V), "4BSV backward start": 4 * B * S * V}


def t4_left(L: int, a: int, b: int, s: int, h: int, p: int) -> dict[str, int]:
    """T4 (seed 003), left side: "L(9bshp + bsh + 2abssp + abss + 2bshp)": linear layers 9bshp + bsh,
    attention scores and softmax 2abssp, mask abss, two norms 2bshp (p bytes per element)."""
    return {
        "L·9bshp linear": L * 9 * b * s * h * p,
        "L·bsh": L * b * s * h,
        "L·2abssp scores+softmax": L * 2 * a * b * s * s * p,
        "L·abss mask": L * a * b * s * s,
        "L·2bshp norms": L * 2 * b * s * h * p,
    }


def t4_right(L: int, a: int, b: int, s: int, h: int, p: int) -> dict[str, int]:
    """T4 (seed 003), right side: "Lbshp[16 + 2/p + (as/h)(2 + 1/p)]", multiplied out:
    L(16bshp + 2bsh + 2abssp + abss)."""
    return {
        "L·16bshp": L * 16 * b * s * h * p,
        "L·2bsh": L * 2 * b * s * h,
        "L·2abssp": L * 2 * a * b * s * s * p,
        "L·abss": L * a * b * s * s,
    }


def i1_working_memory(model_bytes: int, mode: str) -> dict[str, int]:
    """I1 (seed 001): "推理工作内存 ≈ 2 * 模型内存", "训练内存 ≈ 4 * 模型内存" (model memory = N·p)."""
    return {"2 × model" if mode == "generate" else "4 × model": (2 if mode == "generate" else 4) * model_bytes}


def i2_inference_bound(train_peak: int) -> dict[str, int]:
    """I2 (seed 003): inference "requires no more memory than a quarter of the memory required by
    the training phase for the same parameter count and type"."""
    return {"training / 4": train_peak // 4}


def i3_weights_only(N: int, p: int) -> dict[str, int]:
    """I3 (seed 003): a 7B model needs 28 GB in fp32, 14 GB in bf16, 7 GB in int8 for inference:
    the weights N·p and nothing else."""
    return {"N·p": N * p}

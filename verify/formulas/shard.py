"""Sharded-training memory formulas: the seed's GPU-count rule (T6), DeepSpeed's published
ZeRO-2/ZeRO-3 estimators, and the exact per-rank size of FSDP2 shards. Pure: no torch.

Symbols: P total parameters (P_B in billions), N data-parallel ranks (GPUs), G GPU memory in
GB (1e9 bytes), d0 the first dimension of a parameter (the one FSDP2 shards).
"""

from __future__ import annotations

import math

from verify.formulas import total  # noqa: F401  (callers sum these formulas' terms with it)
from verify.units import FP32

RULE_BYTES_PER_PARAM = 18  # the seed's "memory usage factor of different components during training"
RULE_ACTIVATION_FACTOR = 1.25  # the seed's "memory quantity factor required for the activation process"
RULE_INFERENCE_DIVISORS = (8, 9)  # "for inference, it can be simplified to 1/8~1/9 of the training stage"


def t6_training_gpus(params: int, gpu_gb: float) -> dict:
    """T6 (seed 003, after Walid Soula): "Total number of GPUs ≈ (Model's parameters in billions
    * 18 * 1.25) / GPU Size in GB"; "Llama3 7B" on 24 GB cards: (7 * 18 * 1.25) / 24 ≈ 7.

    Symbols: P_B = params / 1e9; 18 bytes per parameter of model state; 1.25 for activations;
    G = gpu_gb. Returns the terms in GB and the (fractional) GPU count; a count of GPUs to buy
    is its ceiling (`gpus_ceil`).
    """
    p_b = params / 1e9
    states_gb = p_b * RULE_BYTES_PER_PARAM
    total_gb = states_gb * RULE_ACTIVATION_FACTOR
    gpus = total_gb / gpu_gb
    return {"P_B": p_b, "P_B·18 (GB)": states_gb, "P_B·18·1.25 (GB)": total_gb, "gpus": gpus, "gpus_ceil": math.ceil(gpus)}


def t6_inference_gpus(training_gpus: float) -> dict:
    """T6 (seed 003): "For inference, it can be simplified to 1/8~1/9 of the training stage."

    Returns the range of GPU counts the rule gives for inference from the training count, and
    its ceiling (at least one GPU)."""
    lo, hi = training_gpus / RULE_INFERENCE_DIVISORS[1], training_gpus / RULE_INFERENCE_DIVISORS[0]
    return {"gpus_low": lo, "gpus_high": hi, "gpus_ceil": max(1, math.ceil(hi))}


def deepspeed_zero2_gpu_bytes(total_params: int, world_size: int) -> dict:
    """DeepSpeed's published ZeRO-2 estimate, without offload
    (deepspeed/runtime/zero/stage_1_and_2.py, estimate_zero2_model_states_mem_needs,
    cpu_offload=False): gpu_mem = 4 * total_params + int(16 * total_params / total_gpus).

    Terms: 4P for fp16 parameters and fp16 gradients kept whole on every GPU; 16P/N for the
    partitioned fp32 master weights, Adam m and v (and fp32 gradient partition). Model states
    only: no activations, no buffers. (DeepSpeed prints these bytes divided by 2^30 as "GB".)
    """
    return {"4P (fp16 params + grads)": 4 * total_params, "16P/N (optimizer partition)": int(16 * total_params / world_size)}


def deepspeed_zero3_gpu_bytes(total_params: int, largest_layer_params: int, world_size: int) -> dict:
    """DeepSpeed's published ZeRO-3 estimate, without offload
    (deepspeed/runtime/zero/stage3.py, estimate_zero3_model_states_mem_needs, cpu_offload=False):
    gpu_mem = largest_layer_memory + int(18 * total_params / total_gpus), with
    largest_layer_memory = 4 * largest_layer_params.

    Terms: 4·largest layer for the gathered fp16 parameters and gradients of the biggest module
    (DeepSpeed's model_to_params: the module with most parameters of its own, recurse=False);
    18P/N for the partitioned model states. Model states only: no activations.
    """
    return {"4·largest_layer": 4 * largest_layer_params, "18P/N": int(18 * total_params / world_size)}


def fsdp_shard_numel(param_shapes: list[tuple[int, ...]], world_size: int) -> int:
    """Elements of rank 0's FSDP2 shard, padding included: each parameter is chunked along its
    first dimension into N pieces of ceil(d0 / N) rows (torch.chunk), and every rank's shard is
    padded to that size, so rank 0 (which holds a full chunk) is the largest:
        sum over parameters of ceil(d0 / N) · (numel / d0).
    A 0-dim parameter is treated as one row."""
    numel = 0
    for s in param_shapes:
        d0 = s[0] if s else 1
        rest = math.prod(s[1:]) if s else 1
        numel += math.ceil(d0 / world_size) * rest
    return numel


def persistent_per_rank(
    param_shapes: list[tuple[int, ...]],
    world_size: int,
    strategy: str,
    *,
    mode: str = "train",
    precision: str = "mixed",
    dtype_bytes: int = 2,
    optimizer: str = "adamw",
) -> dict:
    """Bytes that stay on rank 0 between steps: parameters, gradients, optimizer state.

    strategy "ddp" keeps everything whole (numel P on every rank); "fsdp", "zero2", "zero3"
    keep rank 0's padded shard (`fsdp_shard_numel`). Per element:
      params  4 bytes under mixed precision (fp32 master copy), dtype_bytes otherwise;
      grads   4 under mixed precision (fp32 reduce), dtype_bytes otherwise; 0 for inference;
      optimizer 2 state tensors (Adam m, v) of the parameter's dtype for adam/adamw, 0 for sgd.
    The gathered (unsharded) compute copies are transient and not counted here.
    """
    if strategy == "ddp":
        numel = sum(math.prod(s) for s in param_shapes)
    else:
        numel = fsdp_shard_numel(param_shapes, world_size)
    if mode != "train":
        return {"params": numel * dtype_bytes, "grads": 0, "optimizer": 0}
    weight = FP32 if precision == "mixed" else dtype_bytes
    states = 0 if optimizer == "sgd" else 2
    return {"params": numel * weight, "grads": numel * weight, "optimizer": numel * weight * states}


def smallest_fitting(per_rank_bytes, gpu_bytes: int, max_n: int = 1024) -> int | None:
    """Smallest N in 1..max_n with per_rank_bytes(N) <= gpu_bytes (per_rank_bytes must not grow
    with N), or None if even max_n does not fit. Bisection."""
    if per_rank_bytes(max_n) > gpu_bytes:
        return None
    lo, hi = 1, max_n
    while lo < hi:
        mid = (lo + hi) // 2
        if per_rank_bytes(mid) <= gpu_bytes:
            hi = mid
        else:
            lo = mid + 1
    return lo

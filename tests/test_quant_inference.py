"""Quantized weights in generation and forward (--quant with --mode generate / forward): the model's
Linear layers quantized by bitsandbytes as from_pretrained(load_in_8bit / load_in_4bit) does, the
inference kernels CUDA takes (the 4-bit fused kernel for one decode row, its dequantize + linear
fallback for the prompt), fake tensors against real CPU tensors, storage against the closed forms."""

from __future__ import annotations

import pytest
import torch

from verify.build import build
from verify.configs import load_config
from verify.formulas import memory as M
from verify.formulas.params import total
from verify.measure.fake import run
from verify.measure.memory import MemorySpec, validate
from verify.configs import shape
from verify.measure.quant import bitsandbytes, bnb_layers, cuda_bnb, quantize_bnb_fake, bnb_state_tensors
from verify.measure.tracker import Tracker
from verify.torchapi import fake_mode

PEAK_TOLERANCE = 0.05  # fake trace against the same run on real CPU tensors (generate() itself there)


@pytest.mark.parametrize("quant", ["int8", "nf4", "fp4"])
def test_quantized_weights_equal_bitsandbytes_closed_forms(quant):
    """Every Linear but the output head quantized: int8 rows·cols + an fp32 scale per row; 4-bit
    ⌈n/2⌉ + the 16-entry code + an absmax per 64 (double-quantized for nf4); the rest in bf16."""
    spec = MemorySpec(model="tiny-llama", mode="generate", dtype="bf16", batch=1, seq=16, new_tokens=2, quant=quant)
    r = run(spec)
    model = build(load_config("tiny-llama"), device="meta", quant=quant)
    layers = {m for _, m in bnb_layers(model)}
    assert len(layers) == 2 * 7
    rest = sum(p.numel() for mod in model.modules() if mod not in layers for p in mod.parameters(recurse=False))
    if quant == "int8":
        quantized = sum(total(M.bnb_int8_weight(m.out_features, m.in_features)) for m in layers)
    else:
        quantized = sum(total(M.bnb_4bit_weight(m.out_features * m.in_features, nested=quant == "nf4")) for m in layers)
    assert r.params_bytes == 2 * rest + quantized
    assert r.kv_cache_bytes == total(M.kv_cache(2, 1, 16 + 2 - 1, 4, 16, 2))  # 2 layers, 4 kv heads of 16, bf16


@pytest.mark.parametrize(
    "spec",
    [
        MemorySpec(model="tiny-llama", mode="generate", dtype="fp16", batch=2, seq=24, new_tokens=3, quant="int8"),
        MemorySpec(model="tiny-llama", mode="generate", dtype="bf16", batch=1, seq=24, new_tokens=3, quant="nf4"),
        MemorySpec(model="tiny-llama", mode="generate", dtype="fp16", batch=1, seq=24, new_tokens=3, quant="fp4"),
        MemorySpec(model="tiny-llama", mode="forward", dtype="bf16", batch=2, seq=32, quant="nf4-nodq"),
    ],
    ids=["generate-int8", "generate-nf4", "generate-fp4-fp32-compute", "forward-nf4-nodq"],
)
def test_fake_quantized_inference_equals_the_same_run_on_real_cpu_tensors(spec):
    """Fake tensors (bitsandbytes' fake kernels) against real CPU tensors (transformers' own
    conversion op, generate() itself): weights, buffers and KV cache equal, the peak within
    PEAK_TOLERANCE."""
    fake, real = run(spec, device="fake"), run(spec, device="cpu")
    for field in ("params_bytes", "buffers_bytes", "kv_cache_bytes"):
        assert getattr(fake, field) == getattr(real, field), field
    assert abs(fake.traced_peak_bytes - real.traced_peak_bytes) <= PEAK_TOLERANCE * real.traced_peak_bytes


def test_fp4_with_fp32_compute_dequantizes_the_prompt_but_not_a_decode_row():
    """load_in_4bit's defaults compute in fp32: bitsandbytes' CUDA gemm_4bit has no fp32 MMA kernel,
    so 8 rows or more take the fallback (the weight dequantized to fp32, out × in × 4 bytes, beside
    the fp32 input and output); one decode row takes the fused kernel (the output only)."""
    bnb = bitsandbytes()
    mode = fake_mode()
    with torch.device("meta"):
        layer = torch.nn.Sequential(bnb.nn.Linear4bit(1024, 2048, bias=False, compute_dtype=torch.float32,
                                                      compress_statistics=False, quant_type="fp4"))
    settings = {layer[0]: dict(blocksize=64, compress_statistics=False, quant_type="fp4", quant_storage=torch.uint8)}
    with mode:
        layer = layer.to_empty(device="cpu")
    quantize_bnb_fake(layer, torch.float16, settings, mode)
    for rows, dequantized in ((8, 2048 * 1024 * 4), (1, 0)):
        with mode, torch.no_grad():
            x = torch.empty(rows, 1024, dtype=torch.float16)
            with Tracker() as tracker, cuda_bnb():
                tracker.add(list(layer.parameters()) + bnb_state_tensors(layer) + [x], "params")
                y = layer(x)
        # the input cast to fp32 and the fp32 output, beside the dequantized weight or the fp16 result
        fp32 = rows * (1024 * 4 + 2048 * 4)
        assert tracker.peak - tracker.bytes("params") == fp32 + max(dequantized, rows * 2048 * 2)
        del y


def test_quant_is_refused_for_full_training_and_lora_flags_stay_lora_only():
    """--quant runs with lora, generate and forward; a full training step of bitsandbytes weights is
    refused, and so are --lora-rank / --lora-targets outside --mode lora."""
    s = shape(load_config("tiny-llama"))
    for mode in ("lora", "generate", "forward"):
        validate(MemorySpec(model="tiny-llama", mode=mode, quant="int8", seq=16), s)
    with pytest.raises(ValueError, match="--quant applies to"):
        validate(MemorySpec(model="tiny-llama", mode="train", quant="nf4", seq=16), s)
    with pytest.raises(ValueError, match="--lora-rank and --lora-targets apply to --mode lora"):
        validate(MemorySpec(model="tiny-llama", mode="generate", lora_rank=4, seq=16), s)

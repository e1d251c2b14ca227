"""LoRA and QLoRA training memory (--mode lora): peft's adapters on a frozen base, the base in the
build dtype or quantized by bitsandbytes (int8, NF4), traced on fake tensors and checked against the
same step on real CPU tensors, against the exact counts and against bitsandbytes' storage layout."""

from __future__ import annotations

import json

import pytest
import torch

from verify.build import LoraSettings, build
from verify.configs import load_config
from verify.formulas import memory as M
from verify.formulas.params import total
from verify.measure.fake import run
from verify.measure.memory import MemorySpec, measure
from verify.measure.quant import bnb_layers, bnb_state_tensors, cuda_bnb
from verify.measure.tracker import Tracker
from verify.torchapi import fake_mode

PEAK_TOLERANCE = 0.01  # fake activations and peaks vs the same step on real CPU tensors, relative (equal to the byte today)


def _trainable(model) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def test_llama_7b_lora_rank_8_on_q_and_v_trains_4194304_parameters():
    """LLaMA-7B, r = 8 with peft's default targets for llama (q_proj and v_proj): 32 layers × 2
    modules × 8·(4096 + 4096) = 4,194,304 trainable parameters, everything else frozen."""
    model = build(load_config("llama-7b"), device="meta", lora=LoraSettings(rank=8))
    assert sum(p.numel() for p in _trainable(model)) == 4_194_304 == 32 * 2 * 8 * (4096 + 4096)
    names = {n.split(".")[-4] for n, p in model.named_parameters() if p.requires_grad}  # ...q_proj.lora_A.default.weight
    assert names == {"q_proj", "v_proj"}


def test_peft_gives_the_adapters_fp32_on_a_bf16_base():
    """peft 0.21's get_peft_model(autocast_adapter_dtype=True) upcasts bf16 adapters to fp32; the
    frozen base keeps bf16; on a 4-bit base the adapters are fp32 as well."""
    for quant in ("none", "nf4"):
        model = build(load_config("tiny-llama"), device="cpu", dtype=torch.bfloat16, lora=LoraSettings(quant=quant))
        assert {p.dtype for p in _trainable(model)} == {torch.float32}
        frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
        assert frozen == ({torch.bfloat16} if quant == "none" else {torch.bfloat16, torch.uint8})


@pytest.mark.parametrize(
    "spec",
    [
        MemorySpec(model="tiny-llama", mode="lora", dtype="bf16", batch=2, seq=300),
        MemorySpec(model="tiny-llama", mode="lora", dtype="bf16", batch=2, seq=300, quant="nf4"),
        MemorySpec(model="tiny-llama", mode="lora", dtype="bf16", batch=2, seq=300, quant="nf4-nodq", lora_targets="all-linear"),
        MemorySpec(model="tiny-llama", mode="lora", dtype="bf16", batch=2, seq=300, quant="int8"),
        MemorySpec(model="tiny-gpt2", mode="lora", dtype="bf16", batch=10, seq=64, quant="nf4", attn="eager"),
        MemorySpec(model="tiny-qwen2", mode="lora", dtype="bf16", batch=2, seq=300, quant="int8", lora_targets="all-linear"),
        MemorySpec(model="tiny-llama", mode="lora", dtype="bf16", precision="mixed", batch=2, seq=64, checkpointing=True,
                   lora_rank=4),
        MemorySpec(model="tiny-llama", mode="lora", dtype="fp16", batch=2, seq=300, quant="nf4", optimizer="adamw-8bit",
                   checkpointing=True),
    ],
    ids=["llama-bf16", "llama-nf4", "llama-nf4-nodq-all-linear", "llama-int8", "gpt2-conv1d-nf4", "qwen2-bias-int8",
         "llama-mixed-checkpointing-r4", "llama-fp16-nf4-8bit-adamw-checkpointing"],
)
def test_fake_lora_step_equals_the_same_step_on_real_cpu_tensors(spec):
    """Fake tensors (bitsandbytes quantizing through its fake kernels) against real CPU tensors
    (transformers' own bitsandbytes conversion): params (quantized storage included), grads,
    optimizer state and the trainable count equal; activations and peak within PEAK_TOLERANCE.
    B·S > 512 where quantized, so the 4-bit forward takes CUDA's dequantize + linear path."""
    fake, real = run(spec, device="fake"), run(spec, device="cpu")
    for field in ("params_bytes", "grads_bytes", "optimizer_bytes", "buffers_bytes", "trainable_params"):
        assert getattr(fake, field) == getattr(real, field), field
    assert fake.extra["lora"] == real.extra["lora"]
    for field in ("activations_bytes", "traced_peak_bytes"):  # the cpu device measures; only fake models a GPU
        f, r = getattr(fake, field), getattr(real, field)
        assert abs(f - r) <= PEAK_TOLERANCE * r, (field, f, r)


@pytest.mark.parametrize("quant", ["none", "nf4", "int8"])
def test_lora_state_bytes_equal_closed_forms(quant):
    """Grads 4 bytes per trainable (fp32) parameter; AdamW 8 per parameter + a 4-byte step per
    adapter tensor; params = the frozen base (bf16, or bitsandbytes' layout of each quantized layer
    + bf16 for the rest) + the fp32 adapters."""
    spec = MemorySpec(model="tiny-llama", mode="lora", dtype="bf16", batch=1, seq=16, quant=quant)
    r = run(spec)
    model = build(load_config("tiny-llama"), device="meta", lora=LoraSettings(quant=quant))
    adapters = _trainable(model)
    n, t = sum(p.numel() for p in adapters), len(adapters)
    assert r.trainable_params == n == 2 * 2 * 8 * (64 + 64)  # 2 layers × q, v × r(in + out)
    assert r.grads_bytes == total(M.gradients(n, 4))
    assert r.optimizer_bytes == total(M.optimizer_state(n, t, 4, "adamw"))
    layers = {m for _, m in bnb_layers(model)}
    rest = sum(p.numel() for mod in model.modules() if mod not in layers for p in mod.parameters(recurse=False)
               if not p.requires_grad)
    if quant == "none":
        base = 0
    elif quant == "int8":
        base = sum(total(M.bnb_int8_weight(m.out_features, m.in_features)) for m in layers)
    else:
        base = sum(total(M.bnb_4bit_weight(m.out_features * m.in_features, nested=True)) for m in layers)
    assert r.params_bytes == 2 * rest + base + 4 * n


def test_llama_7b_nf4_storage_equals_bitsandbytes_layout():
    """The 4-bit base of LLaMA-7B quantized by bitsandbytes on fake tensors, double-quantized and
    not: every quantized layer holds n/2 bytes of packed weights, the 16-entry NF4 code and an
    absmax per 64 weights (fp32; or uint8 + an fp32 absmax per 256 blocks + its 256-entry code +
    the offset), its bf16 embedding, head and norms untouched: 3,882,613,632 and 4,184,365,056
    bytes with the rank-8 q,v adapters."""
    config = load_config("llama-7b")
    for quant, nested, expected in (("nf4", True, 3_882_613_632), ("nf4-nodq", False, 4_184_365_056)):
        mode = fake_mode()
        model = build(config, device="fake", dtype=torch.bfloat16, fake_mode=mode, lora=LoraSettings(quant=quant))
        layers = [m for _, m in bnb_layers(model)]
        assert len(layers) == 32 * 7  # every Linear but lm_head
        quantized = sum(total(M.bnb_4bit_weight(m.out_features * m.in_features, nested)) for m in layers)
        with Tracker() as tracker:
            tracker.add(list(model.parameters()) + bnb_state_tensors(model), "params")
        rest = 2 * (2 * 32000 * 4096 + 65 * 4096)  # bf16 embedding, lm_head and 65 norms
        assert tracker.bytes("params") == quantized + rest + 4 * 4_194_304 == expected


def test_the_4bit_forward_holds_the_dequantized_weight_above_512_rows_as_cuda_does():
    """One Linear4bit (1024 → 2048, double-quantized) on fake tensors under cuda_bnb: above 512
    input rows the forward allocates the fp32 absmax, the absmax + offset, and the bf16 weight
    (2048 × 1024 × 2 bytes) besides its output, as bitsandbytes' CUDA fallback does; at 512 rows
    only the output (the fused kernel)."""
    from verify.measure.quant import bitsandbytes, quantize_bnb_fake

    bnb = bitsandbytes()
    mode = fake_mode()
    with torch.device("meta"):
        layer = torch.nn.Sequential(bnb.nn.Linear4bit(1024, 2048, bias=False, compute_dtype=torch.bfloat16,
                                                      compress_statistics=True, quant_type="nf4"))
    settings = {layer[0]: dict(blocksize=64, compress_statistics=True, quant_type="nf4", quant_storage=torch.uint8)}
    with mode:
        layer = layer.to_empty(device="cpu")
    quantize_bnb_fake(layer, torch.bfloat16, settings, mode)
    blocks = 1024 * 2048 // 64
    for rows, extra in ((1024, 4 * blocks * 2 + 2048 * 1024 * 2), (512, 0)):
        with mode:
            x = torch.empty(rows, 1024, dtype=torch.bfloat16, requires_grad=True)
            with Tracker() as tracker, cuda_bnb():
                tracker.add(list(layer.parameters()) + bnb_state_tensors(layer), "params")
                y = layer(x)
        assert tracker.peak - tracker.bytes("params") == rows * 2048 * 2 + extra
        del y


def test_memory_cli_lora_prints_trainable_parameters_and_rejects_lora_flags_without_lora(capsys):
    """`memory --mode lora --quant nf4 --json` gives the bytes, trainable_params and the LoRA
    breakdown; --quant outside --mode lora exits 2 with one line."""
    from verify.cli import main

    args = ["memory", "tiny-llama", "--seq", "16"]
    assert main(args + ["--mode", "lora", "--quant", "nf4", "--lora-rank", "4", "--seeds", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["trainable_params"] == 2 * 2 * 4 * (64 + 64)
    assert r["spec"]["quant"] == "nf4" and r["spec"]["lora_rank"] == 4
    assert r["extra"]["lora"]["quant_state_bytes"] > 0 and r["corrected"]["not_covered"]
    assert main(args + ["--quant", "nf4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--mode lora" in err


def test_measure_runs_a_lora_spec_on_the_fake_backend():
    """verify.measure.memory.measure dispatches a MemorySpec of mode "lora" (the one `fit` builds):
    all-linear adapts every Linear but the head, r·(in + out) parameters each."""
    r = measure(MemorySpec(model="tiny-llama", mode="lora", batch=1, seq=16, lora_targets="all-linear", quant="nf4"))
    linears = [m for n, m in build(load_config("tiny-llama")).named_modules()
               if isinstance(m, torch.nn.Linear) and not n.endswith("lm_head")]
    assert r.trainable_params == sum(8 * (m.in_features + m.out_features) for m in linears)
    assert r.peak_bytes > r.params_bytes + r.grads_bytes + r.optimizer_bytes

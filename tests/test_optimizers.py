"""The optimizers people pick (--optimizer adamw | adamw-fused | adamw-8bit | adafactor | adam | sgd |
sgd-momentum): each library's own optimizer traced on fake tensors, its state against the closed
forms of verify/formulas/memory.py, its step temporaries against the predictor's, and the same
step on real CPU tensors."""

from __future__ import annotations

import pytest
import torch

from verify.build import LoraSettings, build
from verify.configs import load_config
from verify.formulas import memory as M
from verify.formulas.params import total
from verify.measure.fake import run
from verify.measure.memory import MEMORY_OPTIMIZERS, MemorySpec
from verify.predict.memory import optimizer_transient

OPTIMIZERS = [o for o in MEMORY_OPTIMIZERS if o != "none"]
RUNS = {  # (spec, weight bytes of the trainable tensors)
    "full-fp32": (MemorySpec(model="tiny-llama", dtype="fp32", batch=2, seq=16, attn="eager"), 4),
    "full-bf16": (MemorySpec(model="tiny-llama-gqa", dtype="bf16", batch=2, seq=16), 2),
    "lora-all-linear": (MemorySpec(model="tiny-llama", mode="lora", dtype="bf16", batch=2, seq=16, lora_rank=64,
                                   lora_targets="all-linear"), 4),  # fp32 adapters; r = 64 makes some ≥ 4096 elements
}


def _trainable_shapes(spec: MemorySpec) -> list[tuple[int, ...]]:
    lora = LoraSettings(spec.lora_rank, spec.lora_targets, spec.quant) if spec.mode == "lora" else None
    model = build(load_config(spec.model), device="meta", lora=lora)
    return [tuple(p.shape) for p in model.parameters() if p.requires_grad]


@pytest.mark.parametrize("run_id", list(RUNS))
@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_optimizer_state_and_step_temporaries_equal_their_closed_forms(optimizer, run_id):
    """The traced state (the tensors in optimizer.state after two steps) equals
    formulas.memory.optimizer_state to the byte, and what the step allocates beyond the steady
    state (the optimizer phase's peak minus the live bytes after the step) equals
    predict.memory.optimizer_transient to the byte."""
    base, p = RUNS[run_id]
    spec = MemorySpec(**{**base.as_dict(), "optimizer": optimizer})
    shapes = _trainable_shapes(spec)
    N, T = sum(M.numel(s) for s in shapes), len(shapes)
    r = run(spec)
    assert r.trainable_params == N
    assert r.optimizer_bytes == total(M.optimizer_state(N, T, p, optimizer, shapes))
    transient = r.phases["optimizer"] - r.snapshots["steady"]["total"]
    assert transient == total(optimizer_transient(N, p, optimizer, shapes))


@pytest.mark.parametrize("optimizer", ["adamw-fused", "adamw-8bit", "adafactor", "sgd-momentum"])
def test_fake_optimizer_step_equals_the_same_step_on_real_cpu_tensors(optimizer):
    """torch's fused AdamW (its CPU kernel), bitsandbytes' AdamW8bit (its CPU kernels), torch's
    Adafactor (whose scalar reads a fake run answers with 1) and SGD with momentum: fake and real
    CPU tensors hold the same bytes in every category and the same peak."""
    spec = MemorySpec(model="tiny-llama", mode="lora", dtype="bf16", batch=2, seq=16, lora_rank=64,
                      lora_targets="all-linear", optimizer=optimizer)
    fake, real = run(spec, device="fake"), run(spec, device="cpu")
    for field in ("params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes", "traced_peak_bytes"):
        assert getattr(fake, field) == getattr(real, field), field
    assert fake.phases["optimizer"] == real.phases["optimizer"]


def test_8bit_adamw_keeps_uint8_state_from_4096_elements_with_an_absmax_per_256():
    """bitsandbytes' AdamW8bit on real CPU tensors: a 64 × 64 tensor (4096 elements) gets uint8
    state1/state2 and 16 fp32 absmax each; a 63 × 64 one (4032) gets fp32 state1/state2; both
    share the two 256-entry fp32 maps only where 8-bit."""
    from verify.measure.quant import bitsandbytes

    big, small = torch.nn.Parameter(torch.randn(64, 64)), torch.nn.Parameter(torch.randn(63, 64))
    opt = bitsandbytes().optim.AdamW8bit([big, small], lr=1e-3)
    big.grad, small.grad = torch.randn_like(big), torch.randn_like(small)
    opt.step()
    b, s = opt.state[big], opt.state[small]
    assert (b["state1"].dtype, b["state2"].dtype, b["absmax1"].shape, b["qmap1"].shape) == (torch.uint8, torch.uint8, (16,), (256,))
    assert (s["state1"].dtype, s["state2"].dtype) == (torch.float32, torch.float32) and "qmap1" not in s
    nbytes = sum(t.numel() * t.element_size() for st in (b, s) for t in st.values() if isinstance(t, torch.Tensor))
    assert nbytes == total(M.optimizer_state(64 * 64 + 63 * 64, 2, 4, "adamw-8bit", [(64, 64), (63, 64)]))


def test_state_bytes_per_parameter_of_llama_7b():
    """Per trainable parameter of LLaMA-7B in bf16 (closed forms on its 291 tensor shapes): AdamW
    and fused AdamW 4 (+ 4 per tensor), 8-bit AdamW 2 + 8/256 (every tensor ≥ 4096 elements, + the
    two maps), SGD with momentum 2, Adafactor 2·(rows + cols) per matrix: under 0.002."""
    shapes = _trainable_shapes(MemorySpec(model="llama-7b"))
    N, T = sum(M.numel(s) for s in shapes), len(shapes)
    per = {o: total(M.optimizer_state(N, T, 2, o, shapes)) / N for o in OPTIMIZERS}
    assert per["adamw"] == per["adamw-fused"] == per["adam"] == (4 * N + 4 * T) / N
    assert per["adamw-8bit"] == (2 * N + 8 * sum(-(-M.numel(s) // 256) for s in shapes if M.numel(s) >= 4096)
                                 + 8 * sum(M.numel(s) for s in shapes if M.numel(s) < 4096) + 2048) / N
    assert 2.03 < per["adamw-8bit"] < 2.04 and per["sgd-momentum"] == 2 and per["sgd"] == 0
    assert per["adafactor"] < 0.002

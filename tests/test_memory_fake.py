"""The fake backend (issue 5): bytes by category of a training step and of generation, traced on
fake tensors, against the exact closed forms and against the same run on real CPU tensors."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
import sys

import pytest
import torch

from verify.build import build
from verify.configs import load_config, shape
from verify.formulas import memory as M
from verify.formulas.params import exact, total
from verify.measure.fake import CudaKernelChoices, TraceError, run
from verify.measure.memory import MemorySpec, validate
from verify.measure.tracker import Tracker
from verify.units import weight_bytes

ACTIVATION_TOLERANCE = 0.01  # fake activations and peaks vs real CPU tensors, relative


def _n_and_tensors(name: str) -> tuple[int, int]:
    """N from the closed form of the Shape; T (parameter tensors) by introspection on meta."""
    config = load_config(name)
    return total(exact(shape(config))), len(list(build(config, device="meta").parameters()))


@pytest.mark.parametrize(
    "model,dtype,precision,optimizer",
    [
        ("tiny-llama", "fp32", "pure", "adamw"),
        ("tiny-llama-gqa", "bf16", "pure", "adam"),
        ("tiny-gpt2", "bf16", "mixed", "adamw"),  # tied head, learned positions, biases
        ("tiny-qwen2", "fp16", "pure", "sgd"),
    ],
)
def test_training_state_bytes_equal_closed_forms_to_the_byte(model, dtype, precision, optimizer):
    """Weights, gradients and optimizer state of a traced training step equal N·p, N·p and
    2N·p + 4T (Adam) or 0 (SGD) exactly, with p the weights' dtype (fp32 under mixed precision)."""
    N, T = _n_and_tensors(model)
    r = run(MemorySpec(model=model, dtype=dtype, precision=precision, optimizer=optimizer, batch=2, seq=16, attn="eager"))
    p = weight_bytes(dtype, precision)
    assert r.params_bytes == total(M.weights(N, p))
    assert r.grads_bytes == total(M.gradients(N, p))
    assert r.optimizer_bytes == total(M.optimizer_state(N, T, p, optimizer))
    assert r.peak_bytes == sum(r.at_peak.values())
    assert r.snapshots["steady"]["total"] == r.params_bytes + r.grads_bytes + r.optimizer_bytes + r.buffers_bytes + 8 * 2 * 16


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-llama-gqa", "tiny-gpt2"])
def test_kv_cache_bytes_equal_closed_form_for_mha_and_gqa(model):
    """After generate(max_new_tokens=5) on a 12-token prompt the cache holds 16 positions:
    2·L·B·T·n_kv·d_head·p bytes exactly; GQA (tiny-llama-gqa) holds n_kv/a of the MHA figure."""
    s = shape(load_config(model))
    r = run(MemorySpec(model=model, mode="generate", dtype="bf16", batch=3, seq=12, new_tokens=5, attn="sdpa"))
    T = M.cached_positions(12, 5)
    assert T == 16
    assert r.kv_cache_bytes == total(M.kv_cache(s.L, 3, T, s.kv_heads, s.head_dim, 2))
    assert r.params_bytes == total(M.weights(total(exact(s)), 2))
    assert r.grads_bytes == r.optimizer_bytes == 0


@pytest.mark.parametrize(
    "spec",
    [
        MemorySpec(model="tiny-llama", dtype="fp32", batch=2, seq=32, attn="eager"),
        MemorySpec(model="tiny-llama-gqa", dtype="bf16", precision="mixed", batch=2, seq=32, attn="sdpa"),
        MemorySpec(model="tiny-gpt2", dtype="fp32", batch=2, seq=32, attn="eager", checkpointing=True),
        MemorySpec(model="tiny-bloom", dtype="fp32", batch=1, seq=24, attn="eager", optimizer="sgd"),
        MemorySpec(model="tiny-mixtral", dtype="bf16", batch=2, seq=16, attn="sdpa"),
        MemorySpec(model="tiny-qwen2", mode="generate", dtype="fp32", batch=2, seq=32, new_tokens=4, attn="sdpa"),
    ],
    ids=["llama-eager", "gqa-mixed-sdpa", "gpt2-checkpointing", "bloom-sgd", "mixtral-bf16", "qwen2-generate"],
)
def test_fake_trace_matches_the_same_run_on_real_cpu_tensors(spec):
    """The same step on real CPU tensors under the same tracker: persistent categories equal,
    activations and peak within ACTIVATION_TOLERANCE (they agree to the byte today)."""
    fake, real = run(spec, device="fake"), run(spec, device="cpu")
    for field in ("params_bytes", "grads_bytes", "optimizer_bytes", "kv_cache_bytes", "buffers_bytes"):
        assert getattr(fake, field) == getattr(real, field), field
    for field in ("activations_bytes", "traced_peak_bytes"):  # the cpu device measures; only fake models a GPU
        f, r = getattr(fake, field), getattr(real, field)
        assert abs(f - r) <= ACTIVATION_TOLERANCE * r, (field, f, r)


def test_eager_activations_grow_quadratically_in_seq_and_sdpa_linearly():
    """Doubling S from 64 to 128 (then 256): eager attention's activation increments grow by a
    factor near 4 per doubling minus the linear part (second difference > 0), SDPA's second
    difference is zero (linear in S)."""
    def acts(attn, S):
        return run(MemorySpec(model="tiny-llama", dtype="fp32", batch=1, seq=S, attn=attn)).activations_bytes

    for attn, quadratic in (("eager", True), ("sdpa", False)):
        a = [acts(attn, S) for S in (64, 128, 192)]
        second = a[2] - 2 * a[1] + a[0]
        if quadratic:
            assert second > 0.05 * a[0]
        else:
            assert abs(second) <= 0.001 * a[0]


def test_checkpointing_keeps_only_layer_inputs_at_the_boundary():
    """With checkpointing, the activations at the forward/backward boundary drop well below the
    run without it (each layer keeps its input only)."""
    base = MemorySpec(model="tiny-llama", dtype="fp32", batch=2, seq=64, attn="eager")
    import dataclasses

    plain, ckpt = run(base), run(dataclasses.replace(base, checkpointing=True))
    assert ckpt.activations_bytes < 0.5 * plain.activations_bytes
    assert ckpt.params_bytes == plain.params_bytes and ckpt.optimizer_bytes == plain.optimizer_bytes


def test_dropout_keeps_a_one_byte_mask_as_on_cuda():
    """CudaKernelChoices routes F.dropout to the fused native_dropout: output (4 bytes/element)
    plus a bool mask (1 byte/element), not the CPU path's fp32 mask; SDPA's dropout is dropped
    as CUDA's flash kernel keeps no extra tensors for it."""
    import torch.nn.functional as F

    with CudaKernelChoices(), Tracker() as tr:
        x = torch.ones(1000, requires_grad=True)
        y = F.dropout(x, 0.1, training=True)
        assert tr.total == 4000 + 4000 + 1000
        q = torch.ones(1, 2, 8, 4)
        before = tr.total
        o = F.scaled_dot_product_attention(q, q, q, dropout_p=0.5)
        assert tr.total - before == o.untyped_storage().nbytes()
    del y


def test_tracker_counts_a_shared_storage_once_and_sees_it_freed():
    """Views share a storage: counted once, freed when the last view dies; peaks are kept."""
    with Tracker() as tr:
        tr.mark("forward")
        a = torch.empty(1000, dtype=torch.float32)
        b = a.view(10, 100)
        assert tr.total == 4000
        del a
        assert tr.total == 4000
        del b
        assert tr.total == 0 and tr.peak == 4000 and tr.phase_peaks["forward"] == 4000


@pytest.mark.parametrize(
    "spec,words",
    [
        (MemorySpec(model="tiny-gpt2", seq=65), "positions"),
        (MemorySpec(model="tiny-llama", batch=0), "batch"),
        (MemorySpec(model="tiny-llama", seq=-1), "seq"),
        (MemorySpec(model="tiny-llama", dtype="fp32", precision="mixed"), "mixed"),
        (MemorySpec(model="tiny-llama", mode="generate", checkpointing=True), "training only"),
    ],
)
def test_impossible_specs_are_refused_with_one_line(spec, words):
    """validate() names what is wrong in one line."""
    with pytest.raises(ValueError, match=words) as e:
        validate(spec, shape(load_config(spec.model)))
    assert "\n" not in str(e.value)


def test_architectures_the_tracer_cannot_run_raise_trace_error():
    """BLOOM has no SDPA in transformers; MoE experts' grouped_mm traces in bf16 only."""
    with pytest.raises(TraceError, match="--attn eager"):
        run(MemorySpec(model="tiny-bloom", attn="sdpa", seq=8))
    with pytest.raises(TraceError, match="bf16"):
        run(MemorySpec(model="tiny-mixtral", dtype="fp32", seq=8))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "verify", "memory", *args], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)


def test_cli_json_has_the_schema_and_seed_predictions():
    """`verify memory --json` prints one object with the int categories and the seed predictions
    (T1-T4, I1, I2 from the companion generation run) with relative errors when --seeds asks."""
    p = _cli("tiny-llama", "--seq", "32", "--batch", "2", "--new-tokens", "3", "--seeds", "--json")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    for k in ("params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes", "kv_cache_bytes", "transient_bytes", "peak_bytes"):
        assert isinstance(out[k], int), k
    claims = {v["claim"] for v in out["predictions"].values()}
    assert {"T1", "T2", "T3", "T4", "I1", "I2"} <= claims
    assert all(v["rel_error"] is not None for v in out["predictions"].values())


def test_cli_bad_input_exits_non_zero_with_one_line():
    """Sequence beyond the model's positions: exit 2, one line naming the limit."""
    p = _cli("tiny-gpt2", "--seq", "1000")
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "64 positions" in p.stderr


def test_bench_fake_returns_trace_seconds_and_host_rss_of_a_child_process():
    """bench_fake runs each case in a fresh process and returns its timings and peak RSS."""
    from verify.bench_fake import bench_fake

    (r,) = bench_fake(cases=(("tiny-llama", "bf16", "adamw", 1, 32),))
    assert r["model"] == "tiny-llama" and r["trace_s"] > 0 and 0 < r["host_peak_rss_bytes"] < 2 * 10**9
    assert r["peak_bytes"] > 0


def test_ledger_b5_measures_four_bytes_per_parameter_of_the_seed_shaped_module():
    """B5: the GPT-2-shaped module with V = 50,000 takes exactly 4·N bytes in fp32; the seed's
    493,535,232 is within 1 % (its N misses positions, biases and the final LayerNorm)."""
    from verify.claims import Context
    from verify.claims.memory import b5

    c = b5(Context("fake"))
    assert c.verdict == "CONFIRMED" and c.corrected_value == c.measured == 4 * c.evidence["N module"]
    assert c.evidence["N module"] - c.evidence["N seed"] == 858_624


@pytest.mark.parametrize(
    "spec",
    [
        MemorySpec(model="tiny-llama", mode="forward", dtype="fp32", batch=2, seq=32),
        MemorySpec(model="tiny-gpt2", dtype="bf16", batch=2, seq=32, optimizer="none"),
        MemorySpec(model="tiny-qwen2", dtype="fp32", batch=2, seq=32, loss="sum", optimizer="sgd"),
    ],
    ids=["forward-no-grad", "no-optimizer", "sum-loss"],
)
def test_the_benchmark_knobs_trace_what_real_cpu_tensors_hold(spec):
    """--mode forward (no-grad, no cache, all logits), --optimizer none and --loss sum: the fake trace
    and the same run on real CPU tensors agree to the byte; no optimizer keeps no state; a forward
    keeps at least every position's logits (B·S·V in the compute dtype) at its peak."""
    fake, real = run(spec, device="fake"), run(spec, device="cpu")
    assert (fake.traced_peak_bytes, fake.activations_bytes, fake.optimizer_bytes) == (real.traced_peak_bytes, real.activations_bytes, real.optimizer_bytes)
    if spec.optimizer == "none":
        assert fake.optimizer_bytes == 0 and fake.grads_bytes == fake.params_bytes
    if spec.mode == "forward":
        V = load_config(spec.model).vocab_size
        assert fake.activations_bytes >= spec.batch * spec.seq * V * 4 and fake.grads_bytes == 0

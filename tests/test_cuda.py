"""The CUDA backend: what runs without a GPU (the run list, the errors, the summary) and, where a
GPU is visible, the ground truth itself: exact persistent bytes and fake-vs-CUDA peaks."""

import dataclasses

import pytest
import torch

from verify import sweep
from verify.cli import main
from verify.configs import load_config, shape
from verify.measure import cuda
from verify.measure.memory import MemorySpec, validate

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_gpu_runs_are_valid_and_cover_what_the_predictor_is_checked_on():
    """At least 12 valid runs: training and generation, fp32/mixed/pure, eager and sdpa,
    checkpointing, a batch and a sequence sweep, MHA and GQA generation; names unique."""
    specs = [s for _, s in sweep.GPU_RUNS]
    for name, spec in sweep.GPU_RUNS:
        validate(spec, shape(load_config(spec.model)))
        assert spec.backend == "cuda", name
    assert len({n for n, _ in sweep.GPU_RUNS}) == len(specs) >= 12
    train = [s for s in specs if s.mode == "train"]
    gen = [s for s in specs if s.mode == "generate"]
    assert {(s.dtype, s.precision) for s in train} >= {("fp32", "pure"), ("bf16", "mixed"), ("bf16", "pure")}
    from verify.measure.memory import attention_used  # a run without --attn takes transformers' choice

    assert {attention_used(s) for s in train} == {"eager", "sdpa"} and any(s.checkpointing for s in train)
    assert len({s.seq for s in train if s.model == "gpt2"}) >= 3 and len({s.batch for s in train if s.model == "gpt2"}) >= 2
    kv = {shape(load_config(s.model)).kv_heads < shape(load_config(s.model)).heads for s in gen}
    assert kv == {True, False}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where no GPU is visible")
def test_cuda_backend_without_a_gpu_is_one_line_and_exit_2(capsys):
    assert main(["memory", "tiny-llama", "--backend", "cuda", "--seq", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "needs a CUDA GPU" in err and len(err.splitlines()) == 1
    assert main(["claims", "--backend", "cuda", "--only", "T1"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err


def test_gpu_summary_takes_worst_and_median_over_runs_with_both_figures():
    """The summary compares only ok runs that carry both peaks; OOM runs are counted apart."""
    rows = [
        {"name": "a", "status": "ok", "measured_peak_bytes": 100, "predicted_peak_bytes": 101, "fake_peak_bytes": 100},
        {"name": "b", "status": "ok", "measured_peak_bytes": 200, "predicted_peak_bytes": 196, "fake_peak_bytes": None},
        {"name": "c", "status": "ok", "measured_peak_bytes": 400, "predicted_peak_bytes": None, "fake_peak_bytes": 404},
        {"name": "d", "status": "oom", "spec": {}},
    ]
    s = sweep.summary(rows)
    assert (s["runs"], s["ok"], s["oom"]) == (4, 3, 1)
    assert s["predictor"]["compared"] == 2 and s["predictor"]["worst_rel_error"] == pytest.approx(0.02)
    assert s["predictor"]["median_rel_error"] == pytest.approx(0.015)
    assert s["fake"]["compared"] == 2 and s["fake"]["worst_rel_error"] == pytest.approx(0.01)
    assert s["fake"]["worst_abs_bytes"] == 4 and s["not_predicted"] == ["c"]


@needs_gpu
@pytest.mark.parametrize("mode", ["train", "generate"])
def test_cuda_persistent_bytes_equal_the_fake_backend_exactly(mode):
    """Params, grads, optimizer state and KV cache on the GPU equal the fake trace to the byte."""
    from verify.measure.fake import measure as fake_measure

    spec = MemorySpec(model="tiny-llama-gqa", mode=mode, backend="cuda", dtype="bf16", batch=2, seq=64, new_tokens=4)
    real = cuda.measure(spec)
    fake = fake_measure(dataclasses.replace(spec, backend="fake"))
    for field in ("params_bytes", "grads_bytes", "optimizer_bytes", "kv_cache_bytes"):
        assert getattr(real, field) == getattr(fake, field), field


@needs_gpu
def test_cuda_peak_is_within_2_percent_of_the_fake_peak_on_a_mid_model():
    """max_memory_allocated of a GPT-2 training step against the fake trace of the same step."""
    from verify.measure.fake import measure as fake_measure

    spec = MemorySpec(model="gpt2", backend="cuda", dtype="bf16", precision="mixed", batch=4, seq=512)
    real = cuda.measure(spec)
    fake = fake_measure(dataclasses.replace(spec, backend="fake"))
    assert abs(fake.peak_bytes - real.peak_bytes) / real.peak_bytes <= 0.02


@needs_gpu
def test_bf16_weights_on_the_gpu_are_two_bytes_per_parameter():
    r = cuda.weights_on_gpu("tinyllama-1.1b", "bf16")
    assert r["status"] == "ok" and r["allocated_bytes"] == 2 * r["params"]


@needs_gpu
def test_out_of_memory_is_a_recorded_result():
    spec = MemorySpec(model="llama2-7b", backend="cuda", dtype="fp32", precision="pure", batch=64, seq=4096)
    r = sweep.measure_or_oom(spec)
    assert r["status"] == "oom" and r["spec"]["batch"] == 64

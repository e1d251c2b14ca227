"""The cpu backend: the same steps on real CPU tensors, the CPU allocator's own peak read through
the profiler, against the fake trace; the CPU ground-truth sweep through the code the GPU sweep
runs (run list -> rows -> summary -> results.json); runs too large for the host refused."""

import dataclasses
import json

import pytest

from verify import sweep
from verify.cli import main
from verify.configs import load_config, shape
from verify.measure import cpu
from verify.measure.fake import run
from verify.measure.memory import MemorySpec, validate

TARGET = sweep.TARGETS["fake vs cpu allocator bytes"]


@pytest.mark.parametrize(
    "spec",
    [
        MemorySpec(model="tiny-llama", backend="cpu", dtype="fp32", precision="pure", batch=2, seq=32, attn="eager"),
        MemorySpec(model="tiny-qwen2", backend="cpu", dtype="bf16", precision="mixed", optimizer="sgd", batch=2, seq=32),
        MemorySpec(model="tiny-neox", backend="cpu", mode="forward", dtype="fp32", batch=2, seq=32),
    ],
    ids=["fp32-adamw-eager", "mixed-sgd-sdpa", "forward"],
)
def test_the_allocator_peak_is_within_4_kib_of_the_fake_trace(spec):
    """peak_bytes is the CPU allocator's highest total in the measured step minus its total before
    the model existed: within 4 KiB of the fake trace (a few bytes apart today: 0-dim tensors the
    kernels make of Python scalars) and of the tracker on the same run; persistent categories equal
    the fake trace's to the byte; the allocator's per-phase peaks cover the step's phases."""
    real = cpu.measure(spec, check_memory=False)
    fake = run(dataclasses.replace(spec, backend="fake"))
    assert isinstance(real.peak_bytes, int) and real.peak_bytes > real.params_bytes
    assert abs(real.peak_bytes - fake.traced_peak_bytes) <= TARGET and not real.cuda_terms
    assert abs(real.peak_bytes - real.extra["tracker_peak_bytes"]) <= TARGET
    for field in ("params_bytes", "grads_bytes", "optimizer_bytes", "buffers_bytes"):
        assert getattr(real, field) == getattr(fake, field), field
    phases = real.extra["allocator_phase_peaks"]
    assert set(phases) >= ({"forward", "backward"} if spec.mode == "train" else {"forward"})
    assert max(phases.values()) == real.peak_bytes


def test_allocator_peaks_are_cut_at_the_measured_step_and_by_phase():
    """From synthetic profiler events: the baseline is the total before the first event, the peak
    the highest total after the "measured" range minus the baseline (an earlier, higher total does
    not count), a phase's peak includes the total it starts with."""
    allocs = [(10, 100, 1100), (20, 500, 1600), (30, -500, 1100), (50, 50, 1150), (60, 300, 1450), (70, -300, 1150), (90, 20, 1170)]
    spans = [("verify::measured", 40, 40), ("verify::phase::1::forward", 45, 65), ("verify::phase::2::idle", 80, 95)]
    out = cpu.allocator_peaks(allocs, spans)
    assert out["baseline"] == 1000 and out["peak"] == 450
    assert out["phases"] == {"forward": 450, "idle": 170} and out["events"] == 7


def test_a_run_too_large_for_the_host_is_refused_in_one_line(monkeypatch, capsys):
    """Where the weights (meta build) or the fake trace's peak, plus the margin, exceed MemAvailable,
    the cpu backend refuses before building anything real: HostMemoryError, and `verify memory`
    prints one line, exit 2."""
    spec = MemorySpec(model="tiny-llama", backend="cpu", seq=16)
    weights_only = cpu.with_margin(cpu.weights_bytes(spec))
    assert cpu.host_bytes_needed(spec) > weights_only  # training holds grads and Adam's state beside the weights
    monkeypatch.setattr(cpu, "available_host_bytes", lambda: weights_only)
    with pytest.raises(cpu.HostMemoryError, match="fake trace's peak"):
        cpu.measure(spec)
    monkeypatch.setattr(cpu, "available_host_bytes", lambda: 10**9)  # the 2 GiB margin alone exceeds it
    with pytest.raises(cpu.HostMemoryError, match="its weights"):
        cpu.measure(spec)
    assert main(["memory", "tiny-llama", "--backend", "cpu", "--seq", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "available" in err and "--backend fake" in err and len(err.splitlines()) == 1


def test_cli_memory_backend_cpu_prints_the_allocator_peak(capsys):
    """`verify memory --backend cpu --json`: ints, the allocator's peak with the tracker's beside it
    (fp32: a bf16 matmul on the CPU allocates a buffer inside the kernel that no trace of ops sees,
    36,480 bytes at this run's peak)."""
    assert main(["memory", "tiny-llama", "--backend", "cpu", "--seq", "16", "--batch", "2", "--mode", "generate", "--new-tokens", "4",
                 "--cache", "static", "--dtype", "fp32", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["spec"]["backend"] == "cpu" and out["spec"]["cache"] == "static"
    assert isinstance(out["peak_bytes"], int) and abs(out["peak_bytes"] - out["extra"]["tracker_peak_bytes"]) <= TARGET


def test_cpu_runs_are_valid_and_cover_every_family_and_knob():
    """At least 12 valid cpu runs with unique names: every family of the brief, training in fp32,
    mixed and pure bf16, AdamW and SGD, eager and sdpa, checkpointing; generation with MHA, GQA and
    MQA, a sliding window, a static cache."""
    specs = [s for _, s in sweep.CPU_RUNS]
    assert len({n for n, _ in sweep.CPU_RUNS}) == len(specs) >= 12
    shapes = {}
    for name, spec in sweep.CPU_RUNS:
        shapes[spec.model] = shape(load_config(spec.model))
        validate(spec, shapes[spec.model])
        assert spec.backend == "cpu", name
    families = {load_config(s.model).model_type for s in specs}
    assert families >= {"llama", "qwen2", "mistral", "gpt2", "opt", "bloom", "gpt_neox", "falcon", "gpt_bigcode", "mixtral"}
    train = [s for s in specs if s.mode == "train"]
    gen = [s for s in specs if s.mode == "generate"]
    assert {(s.dtype, s.precision) for s in train} >= {("fp32", "pure"), ("bf16", "mixed"), ("bf16", "pure")}
    assert {s.optimizer for s in train} >= {"adamw", "sgd"} and {s.attn for s in train} == {"eager", "sdpa"}
    assert any(s.checkpointing for s in train)
    kinds = {"mha" if shapes[s.model].kv_heads == shapes[s.model].heads else "mqa" if shapes[s.model].kv_heads == 1 else "gqa" for s in gen}
    assert kinds == {"mha", "gqa", "mqa"}
    assert any(getattr(load_config(s.model), "sliding_window", None) for s in gen) and any(s.cache == "static" for s in gen)


def test_the_cpu_sweep_writes_results_json_with_the_allocator_fake_and_predicted_peaks(tmp_path, monkeypatch):
    """Two tiny runs through report.write_sweep_results (the code `make verify` runs without a GPU,
    shared with the GPU sweep): results.json holds per run the ints measured_peak_bytes (the
    allocator), fake_peak_bytes, predicted_peak_bytes (or None with the reason) and the summary;
    the fake trace is within 4 KiB of the allocator on both; the JSONL is gone once it is written."""
    from verify import report
    from verify.provenance import hardware

    runs = (("tiny-llama-train", MemorySpec(model="tiny-llama", backend="cpu", dtype="fp32", precision="pure", batch=2, seq=32)),
            ("tiny-qwen2-generate", MemorySpec(model="tiny-qwen2", mode="generate", backend="cpu", batch=2, seq=24, new_tokens=5)))
    monkeypatch.setattr(sweep, "CPU_RUNS", runs)
    path = report.write_sweep_results(tmp_path, hardware(), "test", fresh=True)
    data = json.loads(path.read_text())
    rows = {r["name"]: r for r in data["runs"]}
    assert set(rows) == {"tiny-llama-train", "tiny-qwen2-generate"} and not list(tmp_path.glob("*.jsonl"))
    for r in rows.values():
        assert r["status"] == "ok" and r["backend"] == "cpu"
        assert isinstance(r["measured_peak_bytes"], int) and isinstance(r["fake_peak_bytes"], int)
        assert r["measured_peak_bytes"] == r["peak_bytes"] and abs(r["fake_minus_measured_bytes"]) <= TARGET
        assert r["fake_minus_measured_bytes"] == r["fake_peak_bytes"] - r["measured_peak_bytes"]
        assert isinstance(r["predicted_peak_bytes"], int) or r["predictor_not_covered"]
    s = data["summary"]
    assert (s["runs"], s["ok"], s["fake"]["compared"], s["fake"]["missed_target"]) == (2, 2, 2, [])
    assert s["fake"]["worst_abs_bytes"] == max(abs(r["fake_minus_measured_bytes"]) for r in rows.values())
    assert s["predictor"]["compared"] == sum(r["predicted_peak_bytes"] is not None for r in rows.values())

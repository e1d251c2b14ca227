"""Per-rank memory under DDP / FSDP2 on a fake process group (verify.measure.shard), its closed
forms (verify.formulas.shard), the `shard` command, and real ranks (gloo on CPU, NCCL on CUDA)."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from verify.cli import main
from verify.formulas import shard as F
from verify.measure.shard import ShardSpec, measure_shard, model_facts, validate_shard
from verify.predict.shard import extrapolated_peak, sweep_rows


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gpt2", "tiny-mixtral", "tiny-qwen2"])
@pytest.mark.parametrize("world_size", [1, 3, 8, 64])
def test_fsdp_per_rank_persistent_bytes_equal_the_padded_shard_closed_form(model, world_size):
    """Rank 0's parameter, gradient and AdamW-state bytes under FSDP2 mixed precision equal
    ceil(d0/N)·rest summed over the parameters, times 4, 4 and 8 bytes: exactly, padding included
    (N = 3 and 64 do not divide every first dimension; tiny-gpt2 is tied, tiny-mixtral has fused
    expert tensors whose first dimension, 4 experts, is smaller than N = 8 and 64)."""
    r = measure_shard(ShardSpec(model=model, world_size=world_size, strategy="zero3", precision="mixed", seq=16))
    shard = F.fsdp_shard_numel(model_facts(model)["param_shapes"], world_size)
    pr = r["per_rank"]
    assert (pr["params_bytes"], pr["grads_bytes"], pr["optimizer_bytes"]) == (4 * shard, 4 * shard, 8 * shard)


@pytest.mark.parametrize("strategy,mode,precision", [
    ("ddp", "train", "mixed"), ("zero2", "train", "pure"), ("fsdp", "train", "pure"), ("fsdp", "infer", "pure"),
])
def test_persistent_bytes_equal_the_closed_form_for_each_strategy_and_mode(strategy, mode, precision):
    """DDP keeps everything whole; ZeRO-2/FSDP shard it; pure bf16 halves the bytes; inference has
    no gradients or optimizer state: the measured bytes equal persistent_per_rank in each case."""
    spec = ShardSpec(model="tiny-llama-gqa", world_size=3, strategy=strategy, mode=mode, precision=precision, seq=16)
    r = measure_shard(spec)
    pr = r["per_rank"]
    expected = F.persistent_per_rank(model_facts("tiny-llama-gqa")["param_shapes"], 3, strategy, mode=mode,
                                     precision=precision, dtype_bytes=2)
    assert {"params": pr["params_bytes"], "grads": pr["grads_bytes"], "optimizer": pr["optimizer_bytes"]} == expected


def test_fsdp_shard_numel_pads_each_parameter_to_a_whole_chunk():
    """A (5, 3) weight over 4 ranks: chunks of ceil(5/4) = 2 rows, 6 elements; a (2,) bias over 4
    ranks: 1 element; one rank holds everything."""
    assert F.fsdp_shard_numel([(5, 3), (2,)], 4) == 2 * 3 + 1
    assert F.fsdp_shard_numel([(5, 3), (2,)], 1) == 15 + 2


def test_sharding_shrinks_the_per_rank_peak_and_ddp_does_not():
    """Per-rank peak: DDP is the same at N = 2 and 16; ZeRO-3 at N = 16 is below ZeRO-3 at N = 2,
    which is below DDP."""
    peak = {(s, n): measure_shard(ShardSpec(model="tiny-llama", world_size=n, strategy=s, seq=32))["per_rank"]["peak_bytes"]
            for s in ("ddp", "zero3") for n in (2, 16)}
    assert peak[("ddp", 2)] == peak[("ddp", 16)]
    assert peak[("zero3", 16)] < peak[("zero3", 2)] < peak[("ddp", 2)]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_extrapolated_peak_from_two_ranks_matches_the_peaks_measured_at_more(checkpointing):
    """Carried from N = 2 to N = 4 and 16 (the exact persistent part recomputed, the rest of
    each stretch of the step kept, or scaled per shard in the optimizer step), the per-rank peak
    equals the one measured there to within 0.1%; at N = 2 itself exactly."""
    runs = {n: measure_shard(ShardSpec(model="tiny-llama", world_size=n, strategy="zero3", seq=64, checkpointing=checkpointing))
            for n in (2, 4, 16)}
    assert extrapolated_peak(runs[2], 2) == runs[2]["per_rank"]["peak_bytes"]
    for n in (4, 16):
        assert math.isclose(extrapolated_peak(runs[2], n), runs[n]["per_rank"]["peak_bytes"], rel_tol=1e-3)


def test_inference_kv_cache_bytes_equal_the_closed_form():
    """KV cache of the prompt per rank: 2 · L · b · s · kv_heads · head_dim · 2 bytes."""
    r = measure_shard(ShardSpec(model="tiny-llama-gqa", world_size=4, strategy="fsdp", mode="infer", batch=2, seq=24))
    from verify.configs import load_config, shape

    s = shape(load_config("tiny-llama-gqa"))
    assert r["per_rank"]["kv_cache_bytes"] == 2 * s.L * 2 * 24 * s.kv_heads * s.head_dim * 2


def test_the_tracker_follows_allocations_frees_and_storage_resizes():
    """The tracker's total and peak on fake tensors: 400 B allocated, 400 B more, one freed,
    then a storage resized to 0 and back (as FSDP2 frees and re-gathers parameters)."""
    from verify.measure.tracker import Tracker
    from verify.torchapi import fake_mode

    t = Tracker(follow_resizes=True)
    with fake_mode(), t:
        a = torch.empty(100)
        b = torch.empty(100)
        assert t.total == 800
        del b
        assert t.total == 400
        a.untyped_storage().resize_(0)
        assert t.total == 0
        a.untyped_storage().resize_(200)
        assert t.total == 200
    assert t.peak == 800


def test_the_t6_rule_and_deepspeed_estimators_give_the_published_figures():
    """(7·18·1.25)/24 = 6.5625 (the seed's "≈ 7"); DeepSpeed without offload: ZeRO-2
    4P + 16P/N, ZeRO-3 4·largest + 18P/N."""
    assert F.t6_training_gpus(7 * 10**9, 24)["gpus"] == pytest.approx(6.5625)
    assert F.t6_inference_gpus(72)["gpus_low"] == 8 and F.t6_inference_gpus(72)["gpus_high"] == 9
    assert F.total(F.deepspeed_zero2_gpu_bytes(10**9, 8)) == 4 * 10**9 + 2 * 10**9
    assert F.total(F.deepspeed_zero3_gpu_bytes(10**9, 10**8, 8)) == 4 * 10**8 + 18 * 10**9 // 8
    assert F.smallest_fitting(lambda n: 100 // n, 10) == 10 and F.smallest_fitting(lambda n: 100, 10, max_n=4) is None


def test_shard_json_reports_per_rank_bytes(capsys):
    """`shard MODEL --world-size N --gpu NAME --json` prints the spec, the per-rank categories as
    ints, and the verdict against the card's usable bytes (verify/gpus.py)."""
    from verify.gpus import lookup

    assert main(["shard", "tiny-qwen2", "--world-size", "4", "--strategy", "zero2", "--seq", "16", "--gpu", "H100-SXM", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["spec"]["world_size"] == 4 and out["spec"]["strategy"] == "zero2"
    for k in ("params_bytes", "grads_bytes", "optimizer_bytes", "activations_bytes", "peak_bytes"):
        assert isinstance(out["per_rank"][k], int)
    assert out["fits"] is True and out["usable_bytes"] == lookup("H100-SXM").budget().usable_bytes


def test_shard_min_n_finds_the_smallest_fitting_world_size_by_measuring(capsys):
    """--min-n with a GPU size between the per-rank peaks at N = 1 and N = 8 returns an N whose
    measured peak fits while N - 1's does not."""
    one = measure_shard(ShardSpec(model="tiny-llama", world_size=1, strategy="zero3", seq=32))["per_rank"]["peak_bytes"]
    eight = measure_shard(ShardSpec(model="tiny-llama", world_size=8, strategy="zero3", seq=32))["per_rank"]["peak_bytes"]
    gpu_gib = (one + eight) / 2 / 2**30
    assert main(["shard", "tiny-llama", "--world-size", "4", "--strategy", "zero3", "--seq", "32", "--precision", "mixed",
                 "--gpu-gib", repr(gpu_gib), "--min-n", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    n, peaks = out["min_world_size"], {int(k): v for k, v in out["measured_peaks"].items()}
    assert out["confirmed"] and 1 < n <= 8
    assert peaks[n] <= int(gpu_gib * 2**30) < peaks[n - 1]


@pytest.mark.parametrize("argv,needle", [
    (["--world-size", "0"], "world size must be a positive integer"),
    (["--world-size", "-3"], "world size must be a positive integer"),
    (["--world-size", "2", "--strategy", "zero9"], "strategy 'zero9' is not one of ddp, fsdp, zero2, zero3"),
    (["--world-size", "2", "--gpu-gib", "0"], "--gpu-gib must be a positive number of GiB"),
    (["--world-size", "2", "--gpu-gib", "-24"], "--gpu-gib must be a positive number of GiB"),
    (["--world-size", "2", "--gpu", "H1OO"], "unknown GPU 'H1OO'"),
    (["--world-size", "2", "--min-n"], "say which GPU"),
    (["--world-size", "2", "--mode", "serve"], "mode 'serve' is not one of train, generate"),
])
def test_shard_bad_input_prints_one_line_and_exits_2(capsys, argv, needle):
    """World size <= 0, an unknown strategy, mode or GPU, a GPU size <= 0, --min-n without a GPU:
    one line on stderr, status 2."""
    assert main(["shard", "tiny-llama", *argv]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_validate_shard_rejects_what_cannot_run():
    """tiny-llama takes 128 positions: seq 128 passes, 129 does not; checkpointing is for training."""
    from verify.configs import load_config, shape

    s = shape(load_config("tiny-llama"))
    validate_shard(ShardSpec(model="tiny-llama", world_size=2, seq=128), s)
    with pytest.raises(ValueError, match="at most 128 positions"):
        validate_shard(ShardSpec(model="tiny-llama", world_size=2, seq=129, mode="infer"), s)
    with pytest.raises(ValueError, match="training only"):
        validate_shard(ShardSpec(model="tiny-llama", world_size=2, mode="infer", checkpointing=True), s)


def test_activation_checkpointing_lowers_the_activations_and_keeps_the_persistent_bytes():
    """With every decoder layer checkpointed, the bytes live at the end of forward drop; params,
    grads and optimizer state stay the same."""
    runs = [measure_shard(ShardSpec(model="tiny-llama", world_size=4, seq=64, checkpointing=c))["per_rank"] for c in (False, True)]
    assert runs[1]["activations_bytes"] < runs[0]["activations_bytes"]
    for k in ("params_bytes", "grads_bytes", "optimizer_bytes"):
        assert runs[0][k] == runs[1][k]


def _torchrun(tmp_path, model, backend_args, nproc=1):
    out = tmp_path / "ranks.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "verify.measure.shard_ranks", model, "--strategy", "zero3", "--out", str(out), *backend_args]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(out.read_text())


def test_real_gloo_rank_matches_the_fake_figure_on_cpu(tmp_path):
    """torchrun, one real rank on gloo with real CPU tensors, the optimizer stepping the
    DTensors: the persistent bytes equal the fake run's exactly, and the tracked peak is within
    1% of the fake peak."""
    real = _torchrun(tmp_path, "tiny-llama", ["--device", "cpu", "--seq", "32"])
    fake = measure_shard(ShardSpec(model="tiny-llama", world_size=1, strategy="zero3", seq=32))
    for k in ("params_bytes", "grads_bytes", "optimizer_bytes"):
        assert real["per_rank"][k] == fake["per_rank"][k]
    assert math.isclose(real["per_rank"]["peak_bytes"], fake["per_rank"]["peak_bytes"], rel_tol=0.01)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_real_nccl_rank_peak_is_near_the_fake_figure(tmp_path):
    """torchrun on NCCL, one rank per visible GPU, TinyLlama-1.1B (big enough that cuBLAS
    workspaces and the allocator's 512-byte rounding are noise): persistent bytes equal the fake
    run's exactly; torch.cuda.max_memory_allocated during the step (less what was allocated
    before it) is within 10% of the fake per-rank peak."""
    n = torch.cuda.device_count()
    real = _torchrun(tmp_path, "tinyllama-1.1b", ["--device", "cuda", "--seq", "512"], nproc=n)
    fake = measure_shard(ShardSpec(model="tinyllama-1.1b", world_size=n, strategy="zero3", seq=512))
    for k in ("params_bytes", "grads_bytes", "optimizer_bytes"):
        assert real["per_rank"][k] == fake["per_rank"][k]
    assert math.isclose(real["per_rank"]["cuda_peak_bytes"], fake["per_rank"]["peak_bytes"], rel_tol=0.10)


def test_shard_sweep_rows_plot_one_line_per_strategy(tmp_path):
    """sweep_rows takes one measured run per strategy (the row at the reference N is marked measured)
    and carries it to the other N; DDP's rows are flat; the plot is written as a PNG."""
    from verify.plots import plot_per_gpu_memory

    refs = {s: measure_shard(ShardSpec(model="tiny-llama", world_size=4, strategy=s, seq=32)) for s in ("ddp", "fsdp", "zero2", "zero3")}
    rows = sweep_rows(refs, world_sizes=(1, 4, 16))
    assert {(r["strategy"], r["world_size"]) for r in rows} == {(s, n) for s in ("ddp", "fsdp", "zero2", "zero3") for n in (1, 4, 16)}
    assert all(r["measured"] == (r["world_size"] == 4) for r in rows)
    assert len({r["peak_bytes"] for r in rows if r["strategy"] == "ddp"}) == 1
    png = plot_per_gpu_memory(rows, tmp_path / "shard.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_gpu_count_table_puts_the_rule_deepspeed_and_the_measured_n_side_by_side():
    """On a tiny model and GPU sizes of a few hundred kB: each row has the rule's count, both
    DeepSpeed estimates and the measured smallest N for training and inference; the confirmed
    pair was measured at N (fits) and N - 1 (does not)."""
    from verify.claims.shard import INFER, TRAIN, gpu_count_table

    sizes = (0.0009, 0.004)  # GB
    table = gpu_count_table(models=("tiny-llama",), gpu_sizes=sizes, confirm=(("tiny-llama", 0.0009),),
                            train=dict(TRAIN, seq=64), infer=dict(INFER, seq=64))
    rows = {r["gpu_gb"]: r for r in table["rows"]}
    assert set(rows) == set(sizes)
    for r in rows.values():
        for k in ("rule_train_ceil", "rule_infer_ceil", "deepspeed_zero2", "deepspeed_zero3", "measured_train", "measured_infer"):
            assert k in r
    small = rows[0.0009]
    n, peaks = small["measured_train"], {int(k): v for k, v in small["measured_train_peaks"].items()}
    assert small["measured_train_confirmed"] and peaks[n] <= 0.0009e9 and (n == 1 or peaks[n - 1] > 0.0009e9)
    assert rows[0.004]["measured_train"] <= n


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "zero2"])
def test_optimizer_step_on_local_shards_allocates_what_the_dtensor_step_does(strategy):
    """LocalShardStep (the fake backend's shortcut: AdamW foreach on the local shards) gives the
    same peak in every phase as torch's AdamW stepping the DTensors themselves, with N = 3 so
    that shards are padded."""
    spec = ShardSpec(model="tiny-llama", world_size=3, strategy=strategy, seq=32)
    real, local = (measure_shard(spec, local_optimizer_step=flag)["per_rank"] for flag in (False, True))
    assert real["phase_peaks"] == local["phase_peaks"] and real["peak_bytes"] == local["peak_bytes"]

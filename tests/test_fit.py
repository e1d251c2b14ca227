"""`python -m verify fit`: what fits a GPU, answered by fake-tensor runs at the boundary; the GPU
table (verify/gpus.py); Hugging Face repo ids from the local cache; one set of defaults."""

import json
import random

import pytest

from verify.cli import main
from verify.measure.fake import run
from verify.measure.memory import MemorySpec
from verify.units import GiB


def _peak(**fields) -> int:
    return run(MemorySpec(**fields)).peak_bytes


def _fit(capsys, *argv) -> dict:
    assert main(["fit", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_largest_batch_fits_and_one_batch_more_does_not(capsys):
    """With a budget between the peaks at B = 3 and B = 4, fit answers 3: the peak measured at the
    answer is within the budget, the one measured at the answer + 1 is not, and both equal
    independent runs at those batches."""
    p3, p4 = (_peak(model="tiny-llama", batch=b, seq=32, attn="sdpa") for b in (3, 4))
    gib = (p3 + p4) / 2 / GiB
    out = _fit(capsys, "tiny-llama", "--gpu-gib", repr(gib), "--seq", "32")
    assert out["max_batch"] == 3 and out["usable_bytes"] == int(gib * GiB)
    assert out["peak_bytes_at_max"] == p3 <= out["usable_bytes"] < out["peak_bytes_above"] == p4


def test_the_longest_sequence_fits_and_one_token_more_does_not(capsys):
    """--batch alone: the longest prompt of a generation whose peak fits, measured at S and S + 1
    (the budget is put inside the range the model accepts)."""
    low, high = (_peak(model="tiny-gpt2", mode="generate", batch=2, seq=s, new_tokens=4) for s in (8, 40))
    out = _fit(capsys, "tiny-gpt2", "--mode", "generate", "--batch", "2", "--new-tokens", "4",
               "--gpu-gib", repr((low + high) / 2 / GiB))
    S = out["max_seq"]
    assert 8 <= S < 40
    assert _peak(model="tiny-gpt2", mode="generate", batch=2, seq=S, new_tokens=4) == out["peak_bytes_at_max"] <= out["usable_bytes"]
    assert _peak(model="tiny-gpt2", mode="generate", batch=2, seq=S + 1, new_tokens=4) == out["peak_bytes_above"] > out["usable_bytes"]


def test_with_batch_and_seq_fit_says_whether_it_fits_and_the_headroom(capsys):
    """Both B and S: one run; the headroom is the usable bytes less the measured peak, negative
    when it does not fit."""
    peak = _peak(model="tiny-llama", batch=2, seq=16, attn="sdpa")
    for gib, fits in ((peak * 1.01 / GiB, True), (peak * 0.99 / GiB, False)):
        out = _fit(capsys, "tiny-llama", "--gpu-gib", repr(gib), "--batch", "2", "--seq", "16")
        assert out["fits"] is fits and out["peak_bytes"] == peak
        assert out["headroom_bytes"] == out["usable_bytes"] - peak


def test_fewest_gpus_fit_and_one_fewer_does_not(capsys):
    """--strategy without --world-size: the smallest N whose per-rank peak (FSDP2 on a fake
    process group) fits, measured at N and at N - 1."""
    from verify.measure.shard import ShardSpec, measure_shard

    one, eight = (measure_shard(ShardSpec(model="tiny-llama", world_size=n, strategy="zero3", seq=32, precision="pure"))["per_rank"]["peak_bytes"]
                  for n in (1, 8))
    out = _fit(capsys, "tiny-llama", "--strategy", "zero3", "--batch", "1", "--seq", "32", "--gpu-gib", repr((one + eight) / 2 / GiB))
    n = out["min_gpus"]
    assert out["confirmed"] and 1 < n <= 8
    assert out["peak_bytes_at_max"] <= out["usable_bytes"] < out["peak_bytes_above"]


def test_the_search_finds_the_boundary_of_any_growing_peak_from_any_start():
    """largest_fitting on synthetic peaks (linear and quadratic, plateaus, any budget and start,
    good or wrong predictions): the answer is the true boundary, measured at it and one above."""
    from verify.predict.fit import largest_fitting

    rng = random.Random(0)
    for _ in range(300):
        a, b, c = rng.randint(0, 1000), rng.randint(0, 50), rng.random() * 3
        def f(x, a=a, b=b, c=c):
            return a + b * x + int(c * x * x)

        usable, limit = rng.randint(0, 200_000), rng.randint(1, 5000)
        found = largest_fitting(f, usable, limit, start=rng.choice([None, rng.randint(-5, 6000)]))
        truth = max((x for x in range(1, limit + 1) if f(x) <= usable), default=0)
        assert found.largest == truth and found.complete
        assert found.peak_at_largest == (f(truth) if truth else None)
        assert found.peak_above == (f(truth + 1) if truth < limit else None)


def test_a_budget_nothing_fits_answers_zero_with_the_smallest_run(capsys):
    """A budget below the peak at B = 1: max_batch 0, the peak at B = 1 shown as the one above."""
    out = _fit(capsys, "tiny-llama", "--gpu-gib", "0.0001", "--seq", "16")
    assert out["max_batch"] == 0 and out["peak_bytes_above"] > out["usable_bytes"]


def test_fit_draws_the_peaks_against_the_batch(tmp_path, capsys):
    """--plot writes a PNG of the measured peaks with the GPU's line."""
    png = tmp_path / "fit.png"
    out = _fit(capsys, "tiny-llama", "--gpu-gib", "0.002", "--seq", "16", "--plot", str(png))
    assert out["plot"] == str(png) and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("argv,needles", [
    (["--gpu", "H10"], ["unknown GPU 'H10'", "did you mean H100-SXM", "H200", "T4"]),
    (["--gpu", "A100"], ["unknown GPU 'A100'", "did you mean", "A100-80GB", "A100-40GB"]),
    (["--gpu", "H100-PCIe"], ["no citable figure", "--gpu-gib"]),
    (["--gpu", "H100-SXM", "--gpu-gib", "80"], ["not both"]),
    (["--gpu-gib", "0"], ["--gpu-gib must be a positive number of GiB"]),
    (["--gpu-gib", "-3"], ["--gpu-gib must be a positive number of GiB"]),
    (["--gpu-gib", "nan"], ["--gpu-gib must be a positive number of GiB"]),
    ([], ["say which GPU"]),
    (["--gpu", "T4", "--batch", "0", "--seq", "8"], ["batch must be positive"]),
])
def test_fit_bad_input_prints_one_line_and_exits_2(capsys, argv, needles):
    """Unknown GPU (with the names and the nearest ones), both --gpu and --gpu-gib, a size <= 0,
    no GPU, an impossible batch: one line on stderr, status 2."""
    assert main(["fit", "tiny-llama", *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(n in err for n in needles), err


def test_every_gpu_has_a_source_and_its_usable_bytes_are_its_total_less_context_and_margin():
    """Each card names where its total was published; usable = total − CUDA context − margin; the
    H100's total is nvidia-smi's 81,559 MiB; where CUDA's own total was published (A100-40GB) it
    is the one used, and it is below nvidia-smi's."""
    from verify import gpus

    for g in gpus.GPUS:
        b = g.budget()
        assert g.nvidia_smi_source and b.usable_bytes == b.total_bytes - gpus.CUDA_CONTEXT_BYTES - b.margin_bytes
        assert b.margin_bytes == int(gpus.ALLOCATOR_MARGIN_FRACTION * b.total_bytes)
    assert gpus.lookup("h100 80gb hbm3").nvidia_smi_bytes == 81559 * 2**20 == gpus.lookup("H100").total_bytes
    a100 = gpus.lookup("A100-40GB")
    assert a100.total_bytes == a100.cuda_bytes < a100.nvidia_smi_bytes


def test_the_t6_cards_compare_the_measured_side_with_usable_bytes_not_gb():
    """T6's 24/40/80/141 GB stand for real cards: a run compares against the card's usable bytes
    (the RTX 4090's 24,564 MiB less context and margin is more than 24·10^9)."""
    from verify import gpus
    from verify.claims.shard import GPU_SIZES_GB, T6_GPUS, usable_bytes

    assert set(T6_GPUS) == set(GPU_SIZES_GB)
    assert usable_bytes(24) == gpus.lookup("RTX-4090").budget().usable_bytes > 24 * 10**9
    assert usable_bytes(0.0009) == 900_000


# --- Hugging Face repo ids ------------------------------------------------------------------


def _hub_cache(home, repo_id: str, config_text: str) -> None:
    """The layout huggingface_hub keeps: models--org--name/{refs/main, snapshots/<commit>/config.json}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    (root / "snapshots" / commit).mkdir(parents=True)
    (root / "snapshots" / commit / "config.json").write_text(config_text)


def test_a_hugging_face_repo_id_resolves_to_its_cached_config_offline(tmp_path, monkeypatch, capsys):
    """org/name is read from the local Hugging Face cache (HF_HOME) with huggingface_hub's lookup,
    without the network, and the model keeps the repo id as its name."""
    from verify.configs import MODELS_DIR

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    _hub_cache(tmp_path, "someorg/tiny-llama", (MODELS_DIR / "tiny-llama.json").read_text())
    assert main(["params", "someorg/tiny-llama", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == "someorg/tiny-llama"
    assert main(["params", "tiny-llama", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == out["total"]


def test_a_repo_id_not_in_the_cache_says_how_to_get_its_config(tmp_path, monkeypatch, capsys):
    """Offline by default: one line naming the hf command that fetches config.json alone, the
    --allow-download flag, and the path alternative."""
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert main(["params", "meta-llama/Meta-Llama-3-8B"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    for needle in ("not in the local Hugging Face cache", "hf download meta-llama/Meta-Llama-3-8B config.json",
                   "--allow-download", "path to a config.json"):
        assert needle in err


def test_a_near_miss_bundled_name_gets_did_you_mean(capsys):
    assert main(["params", "llama3-8"]) == 2
    err = capsys.readouterr().err
    assert "did you mean llama3-8b" in err and err.count("\n") == 1


# --- one set of defaults --------------------------------------------------------------------


@pytest.mark.parametrize("command", ["memory", "shard", "fit"])
def test_help_shows_the_same_precision_default_for_memory_shard_and_fit(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: pure)" in text and "(default: bf16)" in text and "--gpu-gib" in text


def test_memory_answers_with_categories_and_the_gpu_verdict_and_seeds_only_on_request(capsys):
    """The default output: categories, peak, attention, the verdict on --gpu; no seed tables and no
    companion run. --seeds adds them."""
    assert main(["memory", "tiny-llama", "--seq", "16", "--gpu", "T4", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["gpu"]["fits"] is True and out["gpu"]["headroom_bytes"] == out["gpu"]["usable_bytes"] - out["peak_bytes"]
    assert out["attention"].startswith("sdpa") and "predictions" not in out and "companion" not in out
    assert main(["memory", "tiny-llama", "--seq", "16", "--seeds", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert {"T1", "I2"} <= {v["claim"] for v in out["predictions"].values()} and "companion" in out


def test_bloom_runs_with_the_default_attention_transformers_picks(capsys):
    """BLOOM has no SDPA: without --attn the run takes transformers' choice (eager) and says so."""
    assert main(["memory", "tiny-bloom", "--seq", "16", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["attention"].startswith("eager (transformers' choice") and out["spec"]["attn"] == "eager"


def test_shard_takes_generate_and_still_infer_and_points_from_gpu_gb_to_gpu(capsys):
    """shard --mode generate is the prefill; --mode infer still works with a note; --gpu-gb is one
    line pointing to --gpu and --gpu-gib."""
    assert main(["shard", "tiny-llama", "--world-size", "2", "--mode", "generate", "--seq", "16", "--json"]) == 0
    gen = json.loads(capsys.readouterr().out)
    assert main(["shard", "tiny-llama", "--world-size", "2", "--mode", "infer", "--seq", "16", "--json"]) == 0
    captured = capsys.readouterr()
    assert "--mode generate" in captured.err and json.loads(captured.out)["per_rank"]["kv_cache_bytes"] == gen["per_rank"]["kv_cache_bytes"] > 0
    assert main(["shard", "tiny-llama", "--world-size", "2", "--gpu-gb", "80"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--gpu NAME" in err and "--gpu-gib" in err

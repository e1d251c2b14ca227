"""Generation (issue 14.4): the fake backend's written-out loop holds what transformers' own
generate() holds on real CPU tensors (the CPU allocator's peak), and its fast path (the decode
steps between the first and the last stood in for by growing the cache) equals the loop that
traces every step."""

import dataclasses

import pytest

from verify.configs import load_config, shape
from verify.formulas import memory as M
from verify.formulas.params import total
from verify.measure import cpu
from verify.measure.fake import run
from verify.measure.memory import MemorySpec

ALLOCATOR_BYTES = 4096  # fake loop vs the CPU allocator under generate(), as the sweep's target


def _gen(model: str, **kw) -> MemorySpec:
    return MemorySpec(model=model, mode="generate", **{"dtype": "bf16", "batch": 2, "seq": 24, "new_tokens": 6, **kw})


@pytest.mark.parametrize(
    "spec",
    [
        _gen("tiny-llama"),
        _gen("tiny-llama-gqa", cache="static"),
        _gen("tiny-qwen2", dtype="fp32", new_tokens=9),
        _gen("tiny-bigcode", dtype="fp32"),
        _gen("tiny-gemma"),
        _gen("tiny-mistral", seq=40),
        _gen("tiny-mistral", seq=40, cache="static"),
        _gen("tiny-gpt2", dtype="fp32", batch=3, seq=8, new_tokens=40),
    ],
    ids=["mha", "gqa-static", "gqa-fp32", "mqa-bigcode", "mqa-gemma", "sliding-window", "sliding-window-static", "decode-peak"],
)
def test_the_fake_loop_holds_what_generate_holds_on_real_cpu_tensors(spec):
    """The fake trace of the written-out loop against transformers' generate() on real CPU tensors:
    the CPU allocator's peak within 4 KiB (equal today), the tracker's peak and per-phase peaks of
    the two runs equal, KV cache bytes equal to the byte. (The decode-peak case runs in fp32: a bf16
    matmul of a few rows on the CPU allocates a buffer inside the kernel, 44,672 bytes for
    tiny-gpt2's MLP, which the allocator sees at its peak and no trace of ops can.)"""
    fake = run(spec, device="fake")
    real = cpu.measure(dataclasses.replace(spec, backend="cpu"), check_memory=False)
    assert abs(fake.traced_peak_bytes - real.peak_bytes) <= ALLOCATOR_BYTES, (fake.traced_peak_bytes, real.peak_bytes)
    assert fake.traced_peak_bytes == real.extra["tracker_peak_bytes"]
    assert fake.kv_cache_bytes == real.kv_cache_bytes and fake.params_bytes == real.params_bytes
    assert {k: v for k, v in fake.phases.items() if k != "idle"} == {k: v for k, v in real.phases.items() if k != "idle"}
    assert set(real.extra["allocator_phase_peaks"]) >= {"prefill", "decode"}


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("model,seq", [("tiny-llama", 6), ("tiny-mistral", 30), ("tiny-falcon", 6)],
                         ids=["mha", "sliding-window", "mqa"])
def test_the_fast_path_equals_the_loop_that_traces_every_step(model, seq, cache):
    """For N = 1, 2, 3, 4 and 30: peak, KV cache bytes, activations and per-phase peaks of the fast
    path (prefill, first decode step where a sliding window asks for it, the cache grown, the last
    step) equal those of the loop that traces every decode step. A 6-token prompt makes the last
    decode step the peak of a dynamic cache at N = 30; the sliding window (16) is passed during
    decoding."""
    for n in (1, 2, 3, 4, 30):
        spec = _gen(model, batch=3, seq=seq, new_tokens=n, cache=cache)
        fast, every = run(spec), run(spec, every_step=True)
        assert (fast.peak_bytes, fast.kv_cache_bytes, fast.activations_bytes, fast.peak_phase) == \
               (every.peak_bytes, every.kv_cache_bytes, every.activations_bytes, every.peak_phase), (n, cache)
        assert fast.phases == every.phases, (n, cache)
    if cache == "dynamic" and model != "tiny-mistral":
        assert every.peak_phase == "decode"


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("model", ["tiny-llama", "tiny-llama-gqa", "tiny-falcon", "tiny-mistral"])
def test_kv_cache_bytes_are_exact_after_n_new_tokens(model, cache):
    """2·L·B·T·n_kv·d_head·p with T = S + N − 1 (the last token is never fed back), for a static
    cache too (generate() preallocates max_length − 1 = S + N − 1 positions); under a sliding window
    W a dynamic cache keeps the W positions of its last update's storage, a static one min(W, S + N − 1)."""
    s = shape(load_config(model))
    window = getattr(load_config(model), "sliding_window", None)
    for seq, n in ((12, 5), (30, 40)):
        r = run(_gen(model, batch=3, seq=seq, new_tokens=n, cache=cache))
        T = M.cached_positions(seq, n)
        if window:
            T = window if cache == "dynamic" else min(window, T)
        assert r.kv_cache_bytes == total(M.kv_cache(s.L, 3, T, s.kv_heads, s.head_dim, 2)), (seq, n)


def test_generate_runs_n_forwards_with_the_models_generation_config():
    """generate() through generate_hf: one prefill and N − 1 decode forwards (no early stop at EOS),
    the model's generation config otherwise (greedy, its BOS); the fake loop makes as many."""
    import torch

    from verify.build import build
    from verify.measure.steps import Hooks, generate_greedy, generate_hf, greedy_config

    config = load_config("tiny-llama")
    model = build(config, device="cpu", dtype=torch.float32, attn="sdpa").eval()
    ids = torch.randint(0, config.vocab_size, (2, 10))
    for fn in (lambda h: generate_hf(model, ids, torch.ones_like(ids), 7, h), lambda h: generate_greedy(model, ids, 7, h, every_step=True)):
        marks = []
        cache = fn(Hooks(mark=marks.append))
        assert marks == ["prefill"] + ["decode"] * 6 + ["idle"] and cache.get_seq_length() == 10 + 7 - 1
    g = greedy_config(model, 7)
    assert (g.do_sample, g.max_new_tokens, g.bos_token_id) == (False, 7, model.generation_config.bos_token_id)
    assert g.eos_token_id >= config.vocab_size  # an id no row can emit: N tokens for every row

"""What a GPU adds to a CPU trace (verify/formulas/cuda.py, the fake backend's cuda_terms), and
flash-attn 2 emulated (--attn flash): worked examples of each formula, the terms against the
traced storages, and what the emulated flash-attn saves and allocates."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path
import sys

import pytest
import torch

from verify.formulas import cuda as C
from verify.formulas.params import total
from verify.measure.fake import FlashAttnFunc, cuda_ops, flash_attention, run
from verify.measure.memory import MemorySpec
from verify.measure.tracker import Tracker

MiB = 2**20


# --- worked examples of the formulas ------------------------------------------------------------


def test_the_allocator_books_every_storage_at_a_multiple_of_512_bytes():
    """round_size: at least 512, then up to a multiple of 512; a zero-byte storage books nothing."""
    assert [C.round_size(n) for n in (0, 1, 511, 512, 513, 8192)] == [0, 512, 512, 512, 1024, 8192]
    assert total(C.allocator_rounding([1, 512, 8193])) == 511 + 0 + 511


def test_a_fresh_large_segment_is_counted_whole_only_when_less_than_a_mebibyte_is_left():
    """whole_block_extra: >= 10 MiB requests get ⌈size/2 MiB⌉·2 MiB and keep a remainder of
    <= 1 MiB; smaller requests are cut from 2 MiB or 20 MiB buffers and split."""
    assert C.whole_block_extra(32 * MiB) == 0
    assert C.whole_block_extra(20 * MiB - 4096) == 4096
    assert C.whole_block_extra(11 * MiB + 512) == MiB - 512
    assert C.whole_block_extra(10 * MiB + 1) == 0  # 2 MiB - 512 left over: split off
    assert C.whole_block_extra(3 * MiB) == 0
    assert total(C.whole_block_bound(3)) == 3 * MiB


def test_cublas_workspaces_of_a_llama_7b_training_step():
    """Two threads (forward, autograd) hold a workspace each: 2 × 32 MiB on an H100, 2 × (8 MiB +
    128 KiB) on an A100; a CUBLAS_WORKSPACE_CONFIG string is summed as SIZE KiB × COUNT."""
    assert total(C.blas_workspaces(9, 2)) == 67_108_864
    assert total(C.blas_workspaces(8, 2)) == 17_039_360
    assert C.cublas_workspace(8, ":4096:8") == 33_554_432
    assert C.cublaslt_workspace(9) == 0 and C.cublaslt_workspace(9, unified=False) == MiB


def test_layernorm_statistics_are_fp32_on_cuda():
    """GPT-2 bf16 B=8 S=1024: 25 LayerNorms × 2·8192·(4 − 2) bytes; nothing in fp32; LLaMA has none."""
    assert total(C.layernorm_stats(8 * 1024, 2, 25)) == 819_200
    assert total(C.layernorm_stats(8 * 1024, 4, 25)) == 0


def test_the_sdpa_kernel_cuda_picks_for_what_transformers_passes():
    """torch 2.13's cuDNN 9.20 makes cuDNN attention first on an H100; an A100 runs flash for bf16
    without a mask, the memory-efficient kernel with a mask or in fp32."""
    assert C.sdpa_backend(2, 128, False, 0.0, C.H100) == "cudnn"
    assert C.sdpa_backend(2, 128, True, 0.0, C.H100) == "cudnn"
    assert C.sdpa_backend(2, 128, False, 0.0, C.A100) == "flash"
    assert C.sdpa_backend(2, 128, True, 0.0, C.A100) == "efficient"
    assert C.sdpa_backend(4, 128, False, 0.0, C.H100) == "efficient"
    assert C.sdpa_backend(4, 6, False, 0.0, C.H100) == "math"


def test_flash_attention_terms_of_a_llama_7b_layer():
    """Forward: rng_state and offset, 2 × 512 booked per layer; backward: softmax_d 262,144 +
    dq_accum 33,554,432 bytes for B=1, S=2048, 32 heads of 128; GQA adds dk, dv expanded."""
    assert total(C.sdpa_flash_forward(32)) == 32_768
    assert total(C.flash_backward_temporaries(1, 32, 32, 2048, 2048, 128, 2)) == 33_816_576
    gqa = C.flash_backward_temporaries(1, 32, 8, 2048, 2048, 128, 2)
    assert gqa["dk, dv expanded 2·B·S·H·d·p"] == 2 * 2048 * 32 * 128 * 2
    assert total(C.efficient_lse_padding(1, 32, 2048)) == 0 and total(C.efficient_lse_padding(2, 8, 40)) == 4 * 2 * 8 * 24


def test_embedding_backward_scratch_appears_above_3072_indices():
    """N <= 3072: one atomic kernel, no scratch (LLaMA-7B B=1 S=2048). N = 4096, V = 32000, h = 4096:
    three N-long index arrays, two min(N, V)-long, P = N/10 + min(N, V) offsets, two counters, and
    the fp32 partial sums P·h·4, each booked at round_size."""
    assert total(C.embedding_backward_temporaries(2048, 32000, 4096, 2)) == 0
    N, P = 4096, 4096 // 10 + 4096
    parts = [8 * N] * 3 + [8 * N] * 2 + [8 * P, 8, 8, 4 * P * 4096]
    assert total(C.embedding_backward_temporaries(N, 32000, 4096, 2)) == sum(C.round_size(n) for n in parts)


def test_adams_step_counters_live_on_the_host():
    """291 fp32 step counters of LLaMA-7B: −1,164 bytes."""
    assert total(C.host_optimizer_scalars(291)) == -1164


# --- the terms on a traced run ----------------------------------------------------------------------


def test_the_rounding_term_equals_the_rounding_of_the_storages_live_at_the_peak():
    """Σ(round512(n) − n) over the device storages live at the modelled peak, recomputed from their
    sizes, equals the tracker's running term; host-resident storages are left out."""
    tracker = Tracker()
    tracker.record_live_at_gpu_peak = True
    r = run(MemorySpec(model="tiny-gpt2", dtype="bf16", batch=2, seq=24), tracker=tracker)
    sizes = [n for n, host in tracker.gpu_live_at_peak if not host]
    assert r.cuda_terms["allocator rounding"] == total(C.allocator_rounding(sizes)) > 0
    hosts = [n for n, host in tracker.gpu_live_at_peak if host]
    assert r.cuda_terms["host-resident on a GPU run"] == -sum(hosts)


@pytest.mark.parametrize("spec", [
    MemorySpec(model="tiny-llama", dtype="bf16", batch=2, seq=32),
    MemorySpec(model="tiny-gpt2", dtype="fp16", batch=2, seq=32, attn="eager"),
    MemorySpec(model="tiny-qwen2", mode="generate", dtype="bf16", batch=2, seq=16, new_tokens=3),
], ids=["llama-train", "gpt2-eager", "qwen2-generate"])
def test_the_peak_is_the_trace_plus_the_cuda_terms_and_nothing_without_them(spec):
    """peak_bytes = traced_peak_bytes + Σ cuda_terms, and the categories at the peak sum to it;
    --no-gpu-terms gives the trace alone with no terms."""
    r = run(spec)
    assert r.peak_bytes == r.traced_peak_bytes + sum(r.cuda_terms.values())
    assert r.peak_bytes == sum(r.at_peak.values())
    threads = 2 if spec.mode == "train" else 1
    assert sum(v for k, v in r.cuda_terms.items() if k.startswith("cuBLAS workspace")) == threads * 33_554_432
    plain = run(dataclasses.replace(spec, gpu_terms=False))
    assert plain.cuda_terms == {} and plain.peak_bytes == plain.traced_peak_bytes == r.traced_peak_bytes


def test_layernorm_statistics_of_half_precision_input_are_booked_in_fp32():
    """native_layer_norm on bf16 rows keeps bf16 mean and 1/std on the CPU; the model books 2 bytes
    more per element of each, for as long as they live."""
    tracker = Tracker()
    tracker.model_gpu(cuda_ops(C.H100, {}))
    with tracker:
        x = torch.randn(6, 10, 64, dtype=torch.bfloat16, requires_grad=True)
        y = torch.nn.functional.layer_norm(x, (64,))
        assert tracker.gpu_terms_now["LayerNorm fp32 statistics"] == total(C.layernorm_stats(60, 2, 1))
        del y
        assert tracker.gpu_terms_now["LayerNorm fp32 statistics"] == 0


def test_embedding_backward_scratch_is_a_peak_candidate_inside_the_op():
    """An embedding backward of 4000 indices books its scratch at that moment only."""
    tracker = Tracker()
    tracker.model_gpu(cuda_ops(C.H100, {}))
    with tracker:
        w = torch.randn(300, 32, requires_grad=True)
        ids = torch.randint(0, 300, (4000,))
        loss = torch.nn.functional.embedding(ids, w).sum()
        tracker.reset_peak()
        loss.backward()
    scratch = total(C.embedding_backward_temporaries(4000, 300, 32, 4))
    assert tracker.gpu_peak_at["terms"]["embedding backward scratch"] == scratch > 0
    assert "embedding backward scratch" not in tracker.gpu_terms_now


def test_memory_json_has_the_trace_the_terms_and_the_peak():
    """`verify memory tiny-llama --seq 32 --json` prints traced_peak_bytes, cuda_terms and peak_bytes."""
    p = subprocess.run([sys.executable, "-m", "verify", "memory", "tiny-llama", "--seq", "32", "--json"],
                       capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["peak_bytes"] == out["traced_peak_bytes"] + sum(out["cuda_terms"].values())
    assert out["cuda_terms"]["cuBLAS workspace (main thread)"] == 33_554_432


# --- --attn flash ---------------------------------------------------------------------------------------


def test_emulated_flash_saves_and_allocates_what_flash_attn_2_does():
    """Forward of (B, S, H, d) bf16, GQA: out B·S·H·d·2 + softmax_lse B·H·S·4 + rng_state 16 bytes
    are all it allocates; backward: dq, dk, dv plus, for the moment of mha_bwd, softmax_d, dq_accum
    and dk, dv expanded with flash_api.cpp's padded shapes."""
    B, S, H, H_kv, d = 2, 40, 4, 2, 16
    q = torch.randn(B, S, H, d, dtype=torch.bfloat16, requires_grad=True)
    k = torch.randn(B, S, H_kv, d, dtype=torch.bfloat16, requires_grad=True)
    v = torch.randn(B, S, H_kv, d, dtype=torch.bfloat16, requires_grad=True)
    with Tracker() as tr:
        tr.add([q, k, v], "activations")
        before = tr.total
        out = FlashAttnFunc.apply(q, k, v, None, True, (-1, -1), 0.0)
        assert tr.total - before == B * S * H * d * 2 + B * H * S * 4 + 16
        loss = out.sum()
        after_forward = tr.total
        tr.reset_peak()
        loss.backward()
    grads = sum(t.grad.untyped_storage().nbytes() for t in (q, k, v))
    scratch = total(C.flash_backward_temporaries(B, H, H_kv, S, S, d, 2))
    assert out.shape == (B, S, H, d)
    dout, unit = B * S * H * d * 2, 2  # the expanded gradient made contiguous (maybe_contiguous), d(loss)/d(loss)
    assert tr.peak - after_forward == grads + scratch + dout + unit


def test_flash_activations_are_sdpa_cpu_activations_plus_the_rng_state_per_layer():
    """Both keep q, k, v, the output and an fp32 (B, H, S) log-sum-exp per layer; flash-attn 2 adds
    a (2,) int64 rng_state: 16 bytes per layer, exactly."""
    base = MemorySpec(model="tiny-llama-gqa", dtype="bf16", batch=2, seq=32, gpu_terms=False)
    sdpa, flash = run(base), run(dataclasses.replace(base, attn="flash"))
    layers = 2
    assert flash.activations_bytes - sdpa.activations_bytes == layers * 16
    assert flash.params_bytes == sdpa.params_bytes


class _SquareWatch(Tracker):
    """A Tracker that records every op output whose last two dimensions are S x S."""

    def __init__(self, S: int):
        super().__init__()
        self.S, self.square = S, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = super().__torch_dispatch__(func, types, args, kwargs)
        for t in (out if isinstance(out, (tuple, list)) else (out,)):
            if isinstance(t, torch.Tensor) and t.dim() >= 2 and t.shape[-1] == t.shape[-2] == self.S:
                self.square.append((str(func), tuple(t.shape)))
        return out


def test_no_s_by_s_tensor_is_allocated_for_a_sliding_window_model_with_flash():
    """A Mistral-shaped model with a 16-token window at S = 48: SDPA gets an S x S mask, the
    emulated flash-attn 2 path none (no mask for an unpadded batch; the window goes to the kernel)."""
    from transformers import MistralConfig

    config = MistralConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=256, max_position_embeddings=256, sliding_window=16)
    S = 48
    spec = MemorySpec(model="tiny-mistral", dtype="bf16", batch=1, seq=S, gpu_terms=False)
    with_sdpa, with_flash = _SquareWatch(S), _SquareWatch(S)
    run(spec, config=config, tracker=with_sdpa)
    run(dataclasses.replace(spec, attn="flash"), config=config, tracker=with_flash)
    assert with_sdpa.square, "SDPA should see an S x S mask"
    assert with_flash.square == []


def test_the_emulated_attention_returns_batch_seq_heads_dim():
    """transformers hands (B, heads, S, d) in and takes (B, S, heads, d) out, with no weights."""
    module = torch.nn.Module()
    module.is_causal = True
    module.config = None
    q = torch.randn(2, 4, 10, 8, dtype=torch.bfloat16)
    kv = torch.randn(2, 2, 10, 8, dtype=torch.bfloat16)
    out, weights = flash_attention(module, q, kv, kv, None, scaling=0.35, sliding_window=4)
    assert out.shape == (2, 10, 4, 8) and weights is None and torch.isfinite(out.float()).all()


def test_a_storage_resized_below_one_mib_leaves_the_large_pool_and_rejoins_it_when_regrown():
    """FSDP2 frees a gathered parameter with storage.resize_(0) and re-gathers it the same way: the
    large-pool count (the whole-block bound's input) follows the size the storage has now, and is
    back to zero once it is freed at either size."""
    tracker = Tracker(follow_resizes=True)
    tracker.model_gpu(cuda_ops(C.H100, {}))
    with tracker:
        x = torch.empty(2 * C.K_SMALL_SIZE, dtype=torch.uint8)
        assert tracker.large_now == 1
        x.untyped_storage().resize_(0)
        assert tracker.large_now == 0
        x.untyped_storage().resize_(2 * C.K_SMALL_SIZE)
        assert tracker.large_now == 1
        del x
        assert tracker.large_now == 0
        y = torch.empty(2 * C.K_SMALL_SIZE, dtype=torch.uint8)
        y.untyped_storage().resize_(0)
        del y
        assert tracker.large_now == 0

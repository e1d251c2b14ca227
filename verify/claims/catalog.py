"""Every claim of CLAIMS.md (shared/CLAIMS.md in the steering repo): id -> group, seed, quote, and
the backend its measurement needs. The order here is the ledger's order."""

from __future__ import annotations

from dataclasses import dataclass

GROUPS = {
    "P": "Parameter counts",
    "B": "Bytes, dtypes and model size",
    "T": "Training memory",
    "I": "Inference and generation memory",
    "S": "Sampling (temperature, top-k, top-p)",
    "L": "Fine-tuning, embeddings, masks",
}


@dataclass(frozen=True)
class Entry:
    id: str  # claim id as in CLAIMS.md
    group: str  # key of GROUPS
    seed: str  # seed file number ("004"), or "-" for a claim the seeds omit
    quote: str  # the seed's words, short
    needs: str  # backend the measurement runs on: arith | meta | cpu | fake | cuda


CATALOG: tuple[Entry, ...] = (
    Entry("P1", "P", "004", "self-attention has 4h² parameters, whatever the head count", "meta"),
    Entry("P2", "P", "004", "MLP has 8h² (h→4h→h)", "meta"),
    Entry("P3", "P", "004", "each LayerNorm has 2h; the model has (2L+1)·2h", "meta"),
    Entry("P4", "P", "004", "embedding has V·h", "meta"),
    Entry("P5", "P", "004", "a tied output layer adds 0, an untied one V·h", "meta"),
    Entry("P6", "P", "004", "learned positions add N·h; RoPE and ALiBi add nothing", "meta"),
    Entry("P7", "P", "004", "total ≈ L(12h²+4h)+Vh+2h ≈ 12Lh²+Vh", "meta"),
    Entry("P8", "P", "004", "LLaMA-7B: 12·32·4096²+32000·4096 ≈ 6.55B, \"close to 6.7B\"", "meta"),
    Entry("P9", "P", "004", "LLaMA-7B/13B/33B/65B are ≈7/13/33/65 billion", "meta"),
    Entry("P10", "P", "001", "d=768, 12 heads, 12 layers, V=50,000: 123,383,808 total, \"about 12.3 billion\" (123亿)", "meta"),
    Entry("P11", "P", "001", "FFN = 2·d·d_ff + d_ff + d while attention = 4d²", "meta"),
    Entry("P12", "P", "001", "GPT-3 (d=12288, 96 layers): ≈1.1亿 per layer, 105.6亿 in all", "meta"),
    Entry("P13", "P", "003", "GPT-3 has 17.5 billion parameters, Grok-1 31.4 billion", "meta"),
    Entry("P14", "P", "002", "Qwen2-0.5B has Embedding(151936, 896) while its tokenizer has 151,643 entries", "meta"),
    Entry("B1", "B", "003", "fp32 = 4 bytes, fp16/bf16 = 2, int8 = 1, int4 = 0.5 per parameter", "cpu"),
    Entry("B2", "B", "004, 003", "a 7B model needs 28 GB in fp32, 14 GB in fp16/bf16, 7 GB in int8", "fake"),
    Entry("B3", "B", "004", "LLaMA-7B fp16 checkpoint files add up to ≈13.5 GB, near the 14 GB estimate", "cpu"),
    Entry("B4", "B", "002", "a 14B fp16 model needs 14·2 = 28 \"G\", dividing by 1024³", "arith"),
    Entry("B5", "B", "001", "123,383,808 params: 493,535,232 bytes ≈ 494 MB in fp32, ≈ 247 MB in fp16", "fake"),
    Entry("B6", "B", "004", "some parameters (LayerNorm) may stay fp32 in a half-precision checkpoint", "meta"),
    Entry("N1", "B", "002", "fp16 max 65504; bf16 ±3.39e38; fp32 ±3.4e38; sign/exponent/fraction bits 1/5/10, 1/8/7, 1/8/23", "cpu"),
    Entry("T1", "T", "003", "model state per parameter = (x + y + 12) bytes: x weights, y gradients, 12 optimizer (fp32)", "fake"),
    Entry("T2", "T", "001", "M_steady = 16N + 8BD bytes", "fake"),
    Entry("T3", "T", "001", "M_act = L(14E + 4BSS) + 6BSV with E = BSH; M_peak = M_steady + M_act + 4BSV", "fake"),
    Entry("T4", "T", "003", "activations = L(9bshp + bsh + 2abssp + abss + 2bshp) = Lbshp[16 + 2/p + (as/h)(2 + 1/p)], \"a theoretical lower bound\"", "fake"),
    Entry("T5", "T", "003", "fine-tuning with longer sequences gives larger activations", "fake"),
    Entry("T6", "T", "003", "GPUs ≈ P_B·18·1.25 / GPU_GB: \"Llama3 7B\" on 24 GB cards → ≈7; inference needs 1/8–1/9 of that", "fake"),
    Entry("T7", "T", "001", "10% better needs 10^(1/α) ≈ 3.7× parameters, α ≈ 0.07", "arith"),
    Entry("I1", "I", "001", "inference working memory ≈ 2 × model memory; training ≈ 4 ×", "fake"),
    Entry("I2", "I", "003", "inference needs at most 1/4 of training memory", "fake"),
    Entry("I3", "I", "003", "inference memory is weights only: 7B → 28/14/7 GB", "fake"),
    Entry("I4", "I", "-", "KV cache = 2 · L · b · s · n_kv_heads · head_dim · bytes (the seeds omit it)", "fake"),
    Entry("Q1", "I", "003", "13B-int8 is \"generally better\" than 7B-bf16", "meta"),
    Entry("S1", "S", "003", "temperature divides the logits; higher T flattens, T = 0.8 sharpens", "cpu"),
    Entry("S2", "S", "003", "Top-K keeps the K most likely tokens", "cpu"),
    Entry("S3", "S", "003", "Top-P keeps the smallest set whose cumulative probability reaches P; P = 1 keeps all, P = 0 is greedy", "cpu"),
    Entry("S4", "S", "003", "order: temperature, then Top-K, then Top-P inside the Top-K set, then renormalize (T=0.8, K=36, P=0.7)", "cpu"),
    Entry("L1", "L", "002", "LoRA on W 1024×2048 with A 1024×32, B 32×2048 trains only A and B; merging W' = W + A@B gives the same outputs", "cpu"),
    Entry("L2", "L", "002", "LoRA touches only linear layers, not lm_head", "cpu"),
    Entry("L3", "L", "002", "LoRA makes training much faster", "cpu"),
    Entry("A1", "L", "002", "attention_mask hides padding", "cpu"),
)

BY_ID = {e.id: e for e in CATALOG}

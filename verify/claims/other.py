"""Checks of the claims that are not memory peaks: number formats (N1 B1 B4 B6), checkpoint sizes
(B3), sampling (S1-S4), LoRA (L1-L3), masks (A1), scaling arithmetic (T7), quality vs memory (Q1)
and the embedding padding (P14). Each measures with real tensors (cpu), meta modules (meta) or,
for pure arithmetic on the seed's numbers, arith."""

from __future__ import annotations

import math

from verify.claims import Context, Verdict, judge
from verify.formulas import other as F
from verify.units import GB, GiB, fmt_bytes, rel_error


def _cmd(claim_id: str) -> str:
    return f"python -m verify claims --only {claim_id}"


# --- number formats ----------------------------------------------------------------------------


def n1(ctx: Context):
    from verify.measure.numerics import float_formats

    seed = F.float_formats_table()
    measured = float_formats()
    rows, bits_ok = {}, True
    for name, m in measured.items():
        s = seed[name]
        bits = {k: (s[k], getattr(m, k)) for k in ("sign", "exponent", "fraction", "bits", "bytes")}
        bits_ok &= all(a == b for a, b in bits.values())
        rows[name] = {
            "bits (seed, measured)": bits,
            "max (seed, finfo)": (s["max"], m.max), "max rel error": rel_error(s["max"], m.max),
            "min (seed, finfo)": (s["min"], m.min), "min rel error": rel_error(s["min"], m.min),
            "smallest positive normal (finfo.smallest_normal)": m.tiny, "smallest subnormal (bits 0...01)": m.subnormal,
            "max bit pattern s|e|f": m.max_bits, "bias": m.bias,
        }
    worst = max(measured, key=lambda n: abs(rel_error(seed[n]["max"], measured[n].max)))
    fp16_formula = F.fp16_max_seed()
    fp16_by_formula = fp16_formula["2^(e-bias)"] * fp16_formula["1+f/2^m"]
    verdict = None if bits_ok and fp16_by_formula == measured["fp16"].max else Verdict.REFUTED
    return judge(
        "N1", predicted=seed[worst]["max"], measured=measured[worst].max, unit=f"{worst} max", tolerance=0.005,
        verdict=verdict,
        explanation=(
            "torch.finfo and the bit patterns of -0.0 and +inf give sign/exponent/fraction bits 1/8/23 (fp32), "
            "1/5/10 (fp16), 1/8/7 (bf16) as the seed says; maxima 3.4028e38, 65504, 3.3895e38 match its 3.4e38, "
            "65504, 3.39e38 to the digits it gives (the worst row is shown, tolerance 0.5% = its rounding); its "
            "\"minimum\" is finfo.min, the most negative finite value, not the smallest positive number "
            f"(fp16: normal {measured['fp16'].tiny:.3g}, subnormal {measured['fp16'].subnormal:.3g})."
        ),
        inconsistency=(
            "seed 002's fp16 text says the maximum has sign bit 1 and fraction field 1 while its formula uses "
            "(-1)^0 and 1023/1024, and the minimum 'sign=-1, fraction=1'; the exponent field runs 1..30, so the "
            "unbiased exponent is -14..15, not '(-14 - 15)'"
        ),
        evidence={"formats": rows, "fp16 max by the seed's formula 2^(30-15)·(1+1023/1024)": fp16_by_formula},
        backend=ctx.backend, command=_cmd("N1"),
    )


def b1(ctx: Context):
    import torch

    from verify.configs import load_config
    from verify.measure.numerics import element_bytes
    from verify.measure.quant import quantized_storage

    seed_bytes = {k: v / 8 for k, v in F.bits_per_parameter().items()}
    elem = element_bytes()
    q = {w: quantized_storage(load_config("llama-7b"), w, dtype=torch.bfloat16, device="meta") for w in ("int8", "int4")}
    tiny = load_config("tiny-llama")
    cpu_equals_meta = {w: quantized_storage(tiny, w, device="cpu").by_suffix == quantized_storage(tiny, w, device="meta").by_suffix
                       for w in ("int8", "int4")}
    measured = {"fp32": elem["fp32"], "fp16": elem["fp16"], "bf16": elem["bf16"],
                "int8": q["int8"].bytes_per_quantized_param, "int4": q["int4"].bytes_per_quantized_param}
    rows = {k: {"seed": seed_bytes[k], "measured": measured[k], "rel_error": rel_error(seed_bytes[k], measured[k])}
            for k in seed_bytes}
    int4 = q["int4"]
    (g,) = int4.group_sizes  # every LLaMA-7B layer's input size is a multiple of quanto's 128
    verdict = None if all(cpu_equals_meta.values()) else Verdict.ERROR
    return judge(
        "B1", predicted=seed_bytes["int4"], measured=measured["int4"], unit="bytes per parameter (int4)",
        tolerance=0.01, loose=0.10, verdict=verdict,
        explanation=(
            "fp32/fp16/bf16 element sizes are exactly 4/2/2 bytes; optimum-quanto's int8 weights of LLaMA-7B take "
            f"{measured['int8']:.5f} bytes per parameter (one bf16 scale per output row), its int4 weights "
            f"{measured['int4']:.5f} (bf16 scale and shift per group of {g}: 0.5 + 4/{g}), {measured['int4'] / 0.5 - 1:.1%} more "
            f"than 0.5; the whole quantized model, with embeddings left in bf16, averages {q['int8'].bytes_per_param:.4f} "
            f"(int8) and {int4.bytes_per_param:.4f} (int4) bytes per parameter."
        ),
        corrected=f"int8: 1 + s/d_in; int4: 0.5 + 2s/g bytes per weight (s = 2-byte bf16 scale/shift, g = {g})",
        corrected_value=0.5 + 2 * 2 / g,
        evidence={"per dtype": rows, "quanto llama-7b bf16": {w: v.as_dict() for w, v in q.items()},
                  "tiny-llama quantized on CPU has the same tensors and bytes as on meta": cpu_equals_meta},
        backend=ctx.backend, command=_cmd("B1"),
    )


def b4(ctx: Context):
    nbytes = F.total(F.fp16_model_bytes(14))
    gib = nbytes / GiB
    seed_formula = 1_400_000_000 * 2 / 1024**3  # the seed's written 1,400,000,000 · 2 / 1024 / 1024 / 1024
    return judge(
        "B4", predicted=28.0, measured=gib, unit="GiB (bytes / 1024³)", tolerance=0.01,
        explanation=(
            f"14e9 parameters × 2 bytes = {nbytes:,} bytes = 28.0 GB (1e9) but {gib:.2f} GiB (1024³): the seed's "
            "\"28G\" is right in GB and 7.4% high in GiB, the units it says it divides by."
        ),
        inconsistency=(f"the seed writes 1,400,000,000 (1.4e9, not 14e9) · 2 / 1024³ = {seed_formula:.3f}, and sets "
                       "/1024³ ≈ /10⁹ although they differ by 7.4%"),
        corrected=f"P_B·1e9·2 bytes = 2·P_B GB = 2·P_B·10⁹/2³⁰ GiB: 28 GB = {gib:.2f} GiB",
        evidence={"bytes": nbytes, "GB": nbytes / GB, "GiB": gib, "seed's written formula": seed_formula},
        backend=ctx.backend, command=_cmd("B4"),
    )


# --- checkpoint sizes ----------------------------------------------------------------------------


def b3(ctx: Context):
    import tempfile
    from pathlib import Path

    import torch

    from verify.build import build
    from verify.configs import load_config
    from verify.measure.checkpoint import file_size, shards, specs, written
    from verify.measure.params import count

    confirmations = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, dtype in (("tiny-llama", torch.float16), ("tiny-gpt2", torch.float16), ("tiny-mixtral", torch.bfloat16)):
            torch.manual_seed(0)
            model = build(load_config(name), device="cpu", dtype=dtype)
            if name == "tiny-gpt2":
                model.transformer.ln_f.float()  # a mixed-dtype file: one fp32 norm among fp16 tensors
            confirmations[f"{name} {str(dtype).removeprefix('torch.')}"] = written(model, Path(tmp) / f"{name}.safetensors")
    rule_holds = all(c["file_bytes"] == c["rule_bytes"] and c["header_identical"] for c in confirmations.values())
    model = build(load_config("llama-7b"), device="meta", dtype=torch.float16)
    size = file_size(specs(model))
    n = count(model).total
    split = {f: v.total_bytes for f, v in shards(model, "10GB").items()}  # two files, as hub checkpoints of this size
    estimate = F.total(F.checkpoint_estimate(7 * 10**9))
    return judge(
        "B3", predicted=13.5e9, measured=size.total_bytes, unit="bytes", tolerance=0.005,
        verdict=None if rule_holds else Verdict.ERROR,
        explanation=(
            f"LLaMA-7B in fp16 as one safetensors file is 8 + {size.header_bytes:,} (header) + {size.tensor_bytes:,} "
            f"(2 × {n:,} parameters) = {size.total_bytes:,} bytes = {fmt_bytes(size.total_bytes)} = "
            f"{fmt_bytes(size.total_bytes, 'GiB', 2)}: the seed's ≈13.5 GB within its rounding; its 14 GB estimate is "
            f"{rel_error(estimate, size.total_bytes):+.1%} because it uses 7e9 parameters for a model of {n / 1e9:.2f}B."
        ),
        corrected="8 + len(JSON header) + 2·N bytes, N the counted parameters",
        corrected_value=F.total(F.safetensors_file_bytes(size.header_bytes, 2 * n)),
        evidence={"llama-7b fp16": size.as_dict(), "parameters": n, "GiB": size.total_bytes / GiB,
                  "sharded at max_shard_size=10GB (files, bytes)": split, "sharded total": sum(split.values()),
                  "seed estimate 7B × 2": estimate, "estimate rel error": rel_error(estimate, size.total_bytes),
                  "rule confirmed byte-exactly on written files": confirmations},
        backend=ctx.backend, command=_cmd("B3"),
    )


def b6(ctx: Context):
    import torch

    from verify.build import build
    from verify.configs import load_config
    from verify.measure.checkpoint import file_size, specs, with_norms_in

    rows = {}
    for name in ("llama-7b", "gpt2"):
        model = build(load_config(name), device="meta", dtype=torch.float16)
        half, mixed = file_size(specs(model)), file_size(with_norms_in(model, torch.float32))
        norm_params = sum(s.nbytes for s in with_norms_in(model, torch.float32) if s.dtype == torch.float32) // 4
        rows[name] = {"norm parameters": norm_params, "fp16 file": half.total_bytes, "norms fp32 file": mixed.total_bytes,
                      "added bytes": mixed.total_bytes - half.total_bytes,
                      "norms·(4-2)": F.total(F.norms_fp32_extra(norm_params)),
                      "added fraction": (mixed.total_bytes - half.total_bytes) / half.total_bytes}
    r = rows["llama-7b"]
    return judge(
        "B6", predicted="norms may be stored in fp32", measured=r["added bytes"], unit="bytes added (LLaMA-7B)",
        tolerance=None, verdict=Verdict.CONFIRMED,
        explanation=(
            f"A half-precision file can keep norms in fp32 (safetensors stores each tensor's dtype); for LLaMA-7B's "
            f"{r['norm parameters']:,} RMSNorm weights it adds {r['added bytes']:,} bytes ({r['added fraction']:.4%}; "
            "2 bytes each, the header shrinks a little), so it makes the file larger and cannot explain why it is "
            "below 14 GB: that gap is the 6.74B parameters."
        ),
        inconsistency="seed 004 lists fp32 norms among the reasons the files (13.5 GB) are smaller than 7B × 2 = 14 GB, but fp32 norms add bytes",
        evidence=rows, backend=ctx.backend, command=_cmd("B6"),
    )


# --- sampling ----------------------------------------------------------------------------------


def _sampling(ctx: Context):
    """The tiny model, its prompt and its next-token logits that S1-S4 share (built once per run)."""
    from verify.measure.sampling import SamplingSpec, model_and_prompt, next_token_logits

    def build():
        spec = SamplingSpec()
        model, prompt = model_and_prompt(spec)
        return spec, model, prompt, next_token_logits(model, prompt)

    return ctx.memo(("sampling",), build)


def s1(ctx: Context):
    from verify.measure.sampling import entropy_vs_temperature, temperature_divides

    spec, _, _, logits = _sampling(ctx)
    temps = (0.25, 0.5, 0.8, 1.0, 1.5, 2.0, 4.0)
    H = entropy_vs_temperature(logits, temps)
    increasing = all(H[a] < H[b] for a, b in zip(temps, temps[1:]))
    divides = temperature_divides(logits, spec.temperature)
    ok = increasing and divides and H[0.8] < H[1.0]
    return judge(
        "S1", predicted="logits / T; entropy rises with T; T = 0.8 sharpens", measured=f"H(0.8) = {H[0.8]:.4f} < H(1) = {H[1.0]:.4f} nats",
        unit="nats", tolerance=None, verdict=Verdict.CONFIRMED if ok else Verdict.REFUTED,
        explanation=(
            "transformers' TemperatureLogitsWarper returns exactly logits / T, and on a tiny model's real next-token "
            f"logits the entropy rises strictly with T over {temps} toward ln V; T = 0.8 gives lower entropy (sharper) "
            "than T = 1 (the randomly initialised model's logits are nearly flat, so the differences are small)."
        ),
        evidence={"entropy (nats) by T": H, "ln V": math.log(logits.shape[-1]),
                  "strictly increasing": increasing, "warper output == logits / T": divides, "model": spec.model},
        backend=ctx.backend, command=_cmd("S1"),
    )


def s2(ctx: Context):
    from verify.measure.sampling import top_k_edges

    spec, _, _, logits = _sampling(ctx)
    e = top_k_edges(logits, spec.top_k)
    return judge(
        "S2", predicted=spec.top_k, measured=e["kept"], unit="tokens kept", tolerance=0,
        verdict=None if e["kept are the K largest"] else Verdict.REFUTED,
        explanation=(
            f"TopKLogitsWarper(K={spec.top_k}) keeps exactly the {spec.top_k} largest logits of the tiny model's "
            f"{e['V']}; edge cases: a tie at the K-th value keeps all tied tokens ({e['tie at the K-th value, kept']}), "
            "K larger than V keeps the whole vocabulary, K = 0 is rejected (generate() treats top_k=0 as off)."
        ),
        evidence=e, backend=ctx.backend, command=_cmd("S2"),
    )


def s3(ctx: Context):
    from transformers.generation.logits_process import TopPLogitsWarper

    from verify.measure.sampling import kept, top_p_edges

    spec, _, _, logits = _sampling(ctx)
    row = logits[0].tolist()
    V = len(row)
    grid = [round(0.1 * i, 1) for i in range(11)]
    sizes = {}
    for p in grid:
        measured_set = kept(TopPLogitsWarper(p)(None, logits.clone()))
        seed_set = sorted(F.seed_sampling(row, 1.0, V, p))  # the seed's rule with no temperature and no top-k
        sizes[p] = {"seed rule": len(seed_set), "transformers": len(measured_set), "same set": seed_set == measured_set}
    e = top_p_edges(logits)
    same = all(v["same set"] for v in sizes.values())
    ok = same and e["P=0 kept"] == 1 and e["P=0 keeps argmax"] and e["P=1 kept"] == V
    return judge(
        "S3", predicted=sizes[spec.top_p]["seed rule"], measured=sizes[spec.top_p]["transformers"],
        unit=f"tokens kept at P={spec.top_p}", tolerance=0, verdict=None if ok else Verdict.REFUTED,
        explanation=(
            "TopPLogitsWarper keeps the smallest most-probable set whose cumulative probability reaches P: the same "
            f"set as the seed's rule for every P in {grid}; P = 1 keeps all {V} tokens, P = 0 keeps one, the argmax "
            "(greedy), P outside [0, 1] is rejected; with ties at the cut the kept tokens depend on sort order "
            f"(4 tied tokens, P = 0.3: kept ids {e['ties: 4 tokens at p=0.25 each, P=0.3, kept']})."
        ),
        evidence={"kept by P": sizes, "edges": e}, backend=ctx.backend, command=_cmd("S3"),
    )


def s4(ctx: Context):
    import torch

    from verify.measure.sampling import generate_order, kept, order_effect, sample_frequencies

    spec, model, prompt, _ = _sampling(ctx)
    g = generate_order(model, prompt, spec)
    raw, processed = g.pop("raw"), g.pop("processed")
    seed = F.seed_sampling(raw[0].tolist(), spec.temperature, spec.top_k, spec.top_p)
    probs = torch.softmax(processed[0].double(), dim=-1)
    same_set = sorted(seed) == kept(processed)
    max_dp = max(abs(float(probs[i]) - p) for i, p in seed.items()) if same_set else None
    seed_order_matches = ["temperature", "top_k", "top_p"] in g["orders_reproducing_generate"]
    orders = order_effect(raw, spec)
    freq = sample_frequencies(model, prompt, spec)
    stat_ok = freq["p_value"] >= 1e-3 and freq["outside kept set"] == 0
    ok = same_set and seed_order_matches and max_dp is not None and max_dp < 1e-6 and stat_ok
    return judge(
        "S4", predicted=len(seed), measured=g["kept_by_generate"],
        unit=f"tokens kept (T={spec.temperature}, K={spec.top_k}, P={spec.top_p})", tolerance=0,
        verdict=None if ok else Verdict.REFUTED,
        explanation=(
            f"generate() builds {', '.join(g['generate_processors'])} in that order and its processed scores equal "
            "temperature → top-k → top-p applied to its raw logits, so top-p works on the top-K set renormalized, as "
            f"the seed says; the kept set and probabilities equal the seed's procedure (max |Δp| {max_dp:.1e}); the "
            f"order matters: top-p before top-k keeps {orders['top_p > top_k > temperature']} tokens instead of "
            f"{orders['temperature > top_k > top_p']}; {freq['samples']} samples from generate() fit the renormalized "
            f"distribution (chi-square p = {freq['p_value']:.2f} ≥ 0.001, none outside the kept set)."
        ),
        evidence={**g, "kept set size by order": orders, "seed procedure kept": len(seed), "same kept set": same_set,
                  "max |p_generate - p_seed|": max_dp, "sampling test (seed 0, p >= 0.001 required)": freq},
        backend=ctx.backend, command=_cmd("S4"),
    )


# --- LoRA ---------------------------------------------------------------------------------------


def l1(ctx: Context):
    from verify.measure.lora import SeedLoraSpec, seed_layer

    spec = SeedLoraSpec()
    m = seed_layer(spec)
    predicted = F.total(F.lora_params(spec.d_in, spec.d_out, spec.r))
    tol = 1e-5  # fp32 outputs of magnitude ~6: merged and unmerged sum the same products in another order
    ok = (m["W unchanged by the step"] and m["A changed"] and m["B changed"]
          and m["max |merged - unmerged output|"] <= tol * max(1.0, m["max |unmerged output|"]))
    return judge(
        "L1", predicted=predicted, measured=m["trainable"], unit="trainable parameters", tolerance=0,
        verdict=None if ok else Verdict.REFUTED,
        explanation=(
            f"peft's LoRA on the 1024×2048 layer trains only A and B: {m['trainable']:,} parameters (4.7% of W's "
            f"{m['frozen']:,}); one AdamW step moves A and B and leaves W bit-identical; merge_and_unload writes "
            f"W + ΔW and its outputs equal the unmerged ones within {m['max |merged - unmerged output|']:.1e} "
            f"(tolerance {tol} relative to outputs of {m['max |unmerged output|']:.1f}); peft stores A as r×d_in and "
            "B as d_out×r (transposed) and scales ΔW by lora_alpha/r, a factor the seed leaves out (1 here, α = r)."
        ),
        corrected="output = x@W + (α/r)·x@A@B; W' = W + (α/r)·A@B",
        evidence={**m, "seed A, B": F.lora_params(spec.d_in, spec.d_out, spec.r)},
        backend=ctx.backend, command=_cmd("L1"),
    )


def l2(ctx: Context):
    from verify.measure.lora import wrapped_modules

    runs = [wrapped_modules(m, t) for m in ("tiny-llama", "tiny-gpt2", "tiny-qwen2", "tiny-bloom") for t in (None, "all-linear")]
    runs.append(wrapped_modules("tiny-mixtral", "all-linear"))
    asked = wrapped_modules("tiny-llama", ["lm_head", "embed_tokens"])
    full_size = {}
    for target in (None, "all-linear"):  # LLaMA-7B at rank 8 on meta: trainable = Σ r·(d_in + d_out), exactly
        w = wrapped_modules("llama-7b", target, device="meta", r=8)
        formula = sum(F.total(F.lora_params(i, o, 8)) for i, o in w.pop("linear_dims"))
        full_size[target or "peft default"] = {**w, "Σ r(d_in+d_out)": formula, "formula exact": formula == w["trainable"],
                                               "trainable fraction": w["trainable"] / w["total"]}
    for r in runs:
        r.pop("linear_dims", None)
    dense = [r for r in runs if r["model"] != "tiny-mixtral"]
    lm_head_untouched = all(not r.get("lm_head_wrapped", False) for r in runs)
    linear_only = all(set(r["base_classes"]) <= {"Linear", "Conv1D"} for r in dense)
    all_runs = runs + list(full_size.values())
    ok = lm_head_untouched and linear_only and all(not v["lm_head_wrapped"] for v in full_size.values())
    moe = runs[-1]
    return judge(
        "L2", predicted="only linear layers, not lm_head", measured=f"lm_head wrapped in {sum(r.get('lm_head_wrapped', False) for r in all_runs)} of {len(all_runs)} runs",
        unit="modules", tolerance=None, verdict=Verdict.CONFIRMED if ok else Verdict.REFUTED,
        explanation=(
            "peft never wraps lm_head, by default or with 'all-linear', and on dense models wraps only linear layers "
            "(nn.Linear; GPT-2's Conv1D); by default only the attention q/v projections (GPT-2 c_attn, BLOOM "
            "query_key_value), not every linear layer; on Mixtral 'all-linear' also wraps the router and the expert "
            f"weights ({', '.join(moe.get('base_classes', []))}); asked explicitly, peft does wrap lm_head and the embedding, "
            "so this is a default, not a limit. On LLaMA-7B (meta, r = 8) the default trains "
            f"{full_size['peft default']['trainable']:,} parameters, 'all-linear' {full_size['all-linear']['trainable']:,}, "
            "each exactly Σ r·(d_in + d_out) over the wrapped layers."
        ),
        evidence={"runs": runs, "target_modules=[lm_head, embed_tokens]": asked, "llama-7b, r=8 (meta)": full_size},
        backend=ctx.backend, command=_cmd("L2"),
    )


def l3(ctx: Context):
    from verify.measure.lora import StepSpec, lora_vs_full

    spec = StepSpec()
    r = lora_vs_full(spec)
    flops = r["FLOPs full/lora"]
    speed = r["speedup (full/lora step time)"]
    much = 2.0  # what "much faster" is taken to mean here: at least twice as fast
    return judge(
        "L3", predicted=f"much faster (≥ {much:g}×)", measured=flops, unit="full / LoRA FLOPs per step", tolerance=None,
        verdict=Verdict.CONFIRMED if flops >= much else Verdict.REFUTED,
        explanation=(
            f"On a {r['full']['total'] / 1e6:.1f}M-parameter LLaMA-shaped model (batch {spec.batch} × {spec.seq}, rank "
            f"{spec.r} on all linear layers, {r['trainable fraction']:.1%} trainable) a full step needs {flops:.2f}× the FLOPs "
            "of a LoRA step (torch's FlopCounterMode: the forward pass and the activation gradients still run "
            "through every frozen weight; only the weight gradients go); timed on one thread of a shared CPU, full / LoRA "
            f"step time was {speed:.2f} ({r['full']['step_seconds'] * 1e3:.0f} ms vs {r['lora']['step_seconds'] * 1e3:.0f} ms, "
            f"fastest of {spec.steps} alternating steps; noisy): "
            + (f"at least the {much:g}× that 'much faster' is taken to mean" if flops >= much
               else f"not 'much faster' (taken to mean at least {much:g}×)")
            + f". What shrinks a lot is memory: params + grads + AdamW state {r['state bytes full/lora']:.1f}× smaller."
        ),
        evidence={**r, "spec": dict(spec.__dict__)},
        backend=ctx.backend, command=_cmd("L3"),
    )


# --- masks --------------------------------------------------------------------------------------


def a1(ctx: Context):
    from verify.measure.masks import MaskSpec, padded_vs_alone

    tol = 1e-5  # fp32 logits of magnitude ~1; batched and single runs differ only in summation order
    rows = {m: padded_vs_alone(MaskSpec(m)) for m in ("tiny-llama", "tiny-qwen2", "tiny-bloom", "tiny-gpt2")}
    worst = 0.0
    for r in rows.values():
        worst = max(worst, r["right padding, with mask"],
                    min(r["left padding, with mask"], r["left padding, with mask and positions"]))
    gpt2 = rows["tiny-gpt2"]
    return judge(
        "A1", predicted="padded logits = unpadded logits", measured=worst, unit="max |Δlogit| over real tokens",
        tolerance=None, verdict=Verdict.CONFIRMED if worst <= tol else Verdict.REFUTED,
        explanation=(
            f"With its attention_mask a padded batch gives each real token the logits it has alone within {worst:.1e} "
            f"(tolerance {tol}), left and right padding, on LLaMA, Qwen2, BLOOM and GPT-2 shapes; without the mask "
            f"left padding changes them by up to {max(r['left padding, no mask'] for r in rows.values()):.2f}; right "
            "padding needs no mask in a causal model (padding comes after the real tokens); GPT-2's learned "
            f"positions also need position_ids counted over real tokens (mask alone: {gpt2['left padding, with mask']:.2f})."
        ),
        evidence=rows, backend=ctx.backend, command=_cmd("A1"),
    )


# --- scaling arithmetic, quality ---------------------------------------------------------------------


def t7(ctx: Context):
    terms = F.scaling_multiplier(alpha=0.07, improvement=0.10)
    right = terms["(1+gain)^(1/α)"]
    return judge(
        "T7", predicted=3.7, measured=right, unit="× parameters for +10%", tolerance=0.01, loose=0.10,
        explanation=(
            f"With performance ∝ N^α, +10% needs N × 1.1^(1/0.07) = {right:.2f}, which the seed's 3.7 approximates "
            f"({rel_error(3.7, right):+.1%}); its written formula 10^(1/α) = {terms['10^(1/α)']:.3g} is the factor for 10× "
            "the performance, not +10%."
        ),
        corrected="(1 + 0.10)^(1/α)", corrected_value=right,
        inconsistency=f"the seed writes 10^(1/α) ≈ 3.7, but 10^(1/0.07) = {terms['10^(1/α)']:.3g}",
        evidence=terms, backend=ctx.backend, command=_cmd("T7"),
    )


def q1(ctx: Context):
    import torch

    from verify.build import build
    from verify.configs import load_config
    from verify.measure.params import count
    from verify.measure.quant import quantized_storage

    q13 = quantized_storage(load_config("llama-13b"), "int8", dtype=torch.bfloat16, device="meta")
    p7 = count(build(load_config("llama-7b"), device="meta", dtype=torch.bfloat16))
    p13 = q13.quantized_params + q13.other_params
    seed_side = F.q1_weight_bytes(p13, p7.total)
    return judge(
        "Q1", predicted="13B-int8 better than 7B-bf16", measured=q13.total_bytes / p7.bytes, unit="weight bytes 13B int8 / 7B bf16",
        tolerance=None, verdict=Verdict.NOT_TESTABLE,
        explanation=(
            "Quality needs trained weights and an evaluation, neither of which is here (random init, no downloads). "
            f"The memory half is measured: LLaMA-13B quantized to int8 by optimum-quanto holds {fmt_bytes(q13.total_bytes)} "
            f"(embeddings stay bf16) against {fmt_bytes(p7.bytes)} for LLaMA-7B in bf16 — "
            f"{q13.total_bytes / p7.bytes:.2f}× the weight memory."
        ),
        evidence={"llama-13b int8 (quanto, meta)": q13.as_dict(), "llama-7b bf16 bytes": p7.bytes, "llama-7b params": p7.total,
                  "seed's 1 and 2 bytes per parameter": seed_side},
        backend=ctx.backend, command=_cmd("Q1"),
    )


# --- P14: embedding padding ----------------------------------------------------------------------


def p14(ctx: Context):
    from verify.build import build
    from verify.configs import load_config

    config = load_config("qwen2-0.5b")
    model = build(config, device="meta")
    rows, h = model.get_input_embeddings().weight.shape
    tokenizer_entries = 151_643  # the seed's tokenizer.vocab_size: not measurable here (no tokenizer download)
    special = 3  # <|endoftext|>, <|im_start|>, <|im_end|> of the published Qwen2 tokenizer: the seed's context, not measured
    align = F.power_of_two_alignment(rows)
    pad = F.embedding_padding(rows, tokenizer_entries, special)
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    next128 = -(-(tokenizer_entries + special) // 128) * 128
    return judge(
        "P14", predicted=151_936, measured=int(rows), unit="embedding rows", tolerance=0,
        explanation=(
            f"Built from its config, Qwen2-0.5B has Embedding({rows}, {h}) (tied to lm_head: {tied}); {rows} = "
            f"{align['2^k']} × {align['odd factor']}, so 128 is the largest power of two dividing it; the config's "
            f"bos/eos id is {config.bos_token_id}, equal to the seed's 151,643, i.e. the first id after the regular "
            f"vocabulary; if the tokenizer adds the 3 special tokens published for Qwen2 (151643-151645), "
            f"{pad['unused rows']} rows are never indexed, and since the next multiple of 128 above {tokenizer_entries + special:,} "
            f"is {next128:,}, alignment alone does not explain {rows:,}. The 151,643 tokens and the special tokens are "
            "the seed's and the published tokenizer's figures, not measured here (no tokenizer is downloaded)."
        ),
        evidence={"embedding shape (meta module)": [int(rows), int(h)], "config vocab_size": config.vocab_size,
                  "config bos/eos": [config.bos_token_id, config.eos_token_id], "alignment": align, "padding": pad,
                  "tied": tied, "rows - seed's tokenizer entries": int(rows) - tokenizer_entries,
                  "next multiple of 128 above the tokens": next128,
                  "how established": {"rows, h, tying": "meta-built module", "vocab_size, bos/eos id": "models/qwen2-0.5b.json",
                                      "alignment": "arithmetic on the rows", "151,643 and 3 special tokens": "the seed / published tokenizer (not downloaded)"}},
        backend=ctx.backend, command=_cmd("P14"),
    )

"""Checks of claims B2, B5, T1-T5, I1-I4: bytes measured by the fake backend (FakeTensorMode on
the CPU, every storage counted by category), beside the seeds' formulas and the corrected ones.

Small and mid shapes where a claim's point holds at any size; LLaMA-7B where the claim is about
7B. T1-T4 and I1-I4 run as they are on the cuda backend where a GPU is present (`ctx.backend`);
runs that several checks share are measured once per ledger run (`Context.memo`).
"""

from __future__ import annotations

import dataclasses

from verify.claims import Context, Verdict, judge
from verify.configs import shape
from verify.formulas import memory as M
from verify.formulas.params import exact, total
from verify.measure.memory import MemoryResult, MemorySpec
from verify.units import dtype_bytes, fmt_gb_gib, rel_error

ACT_TOL, ACT_LOOSE = 0.10, 0.25  # activations and peaks: CONFIRMED within 10 %, APPROXIMATE within 25 %
SIZE_TOL, SIZE_LOOSE = 0.05, 0.15  # round "7B -> 28 GB"-style figures


def run(ctx: Context, spec: MemorySpec, **overrides) -> MemoryResult:
    """`spec` measured on the check's backend, with config fields overridden if any are given."""
    from verify.measure.sweeps import measure

    spec = dataclasses.replace(spec, backend=ctx.backend, gpu_terms=ctx.gpu_terms)
    return ctx.memo(("memory", spec, tuple(sorted(overrides.items()))), lambda: measure(spec, **overrides))


def model_facts(ctx: Context, name: str) -> tuple:
    """(Shape, N by the closed form, T parameter tensors by introspection on meta)."""
    from verify.predict.memory import inputs_for

    def facts():
        s, T, _ = inputs_for(name)
        return s, total(exact(s)), T

    return ctx.memo(("facts", name), facts)


def corrected(ctx: Context, spec: MemorySpec):
    """The corrected predictor's Prediction for `spec` as the check's backend measures it (with the
    modelled CUDA terms where the fake backend adds them; dropout probabilities from the config)."""
    from verify.predict.memory import prediction_for

    return prediction_for(dataclasses.replace(spec, backend=ctx.backend, gpu_terms=ctx.gpu_terms))


def _terms_named(pred) -> str:
    """The corrected predictor's activation terms by name: per layer, then outside the layers."""
    names = list(pred.terms.get("activations", {}))
    per_layer = [k.removeprefix("L × ") for k in names if k.startswith("L × ")]
    return "per layer " + ", ".join(per_layer) + "; outside the layers " + ", ".join(k for k in names if not k.startswith("L × "))


def _peak_named(pred) -> str:
    """Which of the corrected predictor's moments the peak is, among which."""
    return f"peak = the highest of its moments ({', '.join(pred.moments)}): here the {pred.peak_moment}"


def cmd(ctx: Context, spec: MemorySpec) -> str:
    parts = [f"python -m verify memory {spec.model} --backend {ctx.backend} --mode {spec.mode} --dtype {spec.dtype}",
             f"--batch {spec.batch} --seq {spec.seq} --attn {spec.attn}"]
    if spec.mode == "train":
        parts.append(f"--precision {spec.precision} --optimizer {spec.optimizer}" + (" --checkpointing" if spec.checkpointing else ""))
    else:
        parts.append(f"--new-tokens {spec.new_tokens}")
    return " ".join(parts) + " --json"


gb = fmt_gb_gib


# --- B: bytes of the weights ----------------------------------------------------------------


def b2(ctx: Context):
    from verify.measure.sweeps import weights_bytes

    _, N, _ = model_facts(ctx, "llama-7b")
    measured = {dt: weights_bytes("llama-7b", dt) for dt in ("fp32", "fp16", "bf16")}
    seed = {"fp32": 28 * 10**9, "fp16": 14 * 10**9, "bf16": 14 * 10**9}
    return judge(
        "B2", predicted=seed["fp32"], measured=measured["fp32"], unit="bytes", tolerance=SIZE_TOL, loose=SIZE_LOOSE,
        explanation=(f"LLaMA-7B has {N:,} parameters, not 7e9: its fp32 weights take {gb(measured['fp32'])} and "
                     f"bf16 {gb(measured['bf16'])}; the seed's 28/14 GB are 7e9 × 4/2 bytes, "
                     f"{rel_error(seed['fp32'], measured['fp32']):+.1%} in GB, and read as GiB they would be "
                     f"{rel_error(seed['fp32'] / 1e9 * 2**30, measured['fp32']):+.1%}; int8 is not materialized by this backend (B1 measures quantized storage)"),
        corrected="N·p bytes with N the module's own count (tied weights once)", corrected_value=total(M.weights(N, 4)),
        evidence={"N": N, **{f"{dt} measured bytes": v for dt, v in measured.items()},
                  **{f"{dt} seed bytes": seed[dt] for dt in seed},
                  **{f"{dt} rel_error": rel_error(seed[dt], measured[dt]) for dt in seed}},
        backend=ctx.backend, command="python -m verify claims --only B2 --json",
    )


def b5(ctx: Context):
    from verify.measure.sweeps import config_with, weights_bytes

    s = shape(config_with("gpt2", vocab_size=50000))
    N = total(exact(s))
    fp32, fp16 = weights_bytes("gpt2", "fp32", vocab_size=50000), weights_bytes("gpt2", "fp16", vocab_size=50000)
    seed_fp32, seed_fp16, seed_N = 493_535_232, 246_767_616, 123_383_808
    return judge(
        "B5", predicted=seed_fp32, measured=fp32, unit="bytes", tolerance=0.01, loose=0.05,
        explanation=(f"4 and 2 bytes per parameter hold to the byte ({fp32:,} = 4 × {N:,}; {fp16:,} = 2 × {N:,}); the "
                     f"seed's figure is {rel_error(seed_fp32, fp32):+.2%} off only because a GPT-2-shaped module with "
                     f"V = 50,000 has {N - seed_N:,} more parameters than its 123,383,808 (learned positions, biases, "
                     "final LayerNorm: claim P10)"),
        corrected="4·N (fp32), 2·N (fp16) with N counted on the module", corrected_value=total(M.weights(N, 4)),
        evidence={"N module": N, "N seed": seed_N, "fp32 measured": fp32, "fp16 measured": fp16, "fp16 seed": seed_fp16,
                  "fp16 rel_error": rel_error(seed_fp16, fp16), "fp32 MB": fp32 / 1e6, "fp32 MiB": fp32 / 2**20},
        backend=ctx.backend, command="python -m verify claims --only B5 --json",
    )


# --- T: training ----------------------------------------------------------------------------

T1_CASES = (  # (label, dtype, precision, optimizer)
    ("fp32 AdamW", "fp32", "pure", "adamw"),
    ("bf16 autocast (fp32 master) AdamW", "bf16", "mixed", "adamw"),
    ("pure bf16 AdamW", "bf16", "pure", "adamw"),
    ("fp32 SGD", "fp32", "pure", "sgd"),
)


def t1(ctx: Context):
    name = "tinyllama-1.1b"
    s, N, T = model_facts(ctx, name)
    rows, first = {}, None
    for label, dtype, precision, optimizer in T1_CASES:
        spec = MemorySpec(model=name, dtype=dtype, precision=precision, optimizer=optimizer, batch=1, seq=128)
        r = run(ctx, spec)
        x = dtype_bytes(dtype)  # the seed's x = y: bytes of the weights and gradients the step computes with
        measured = r.params_bytes + r.grads_bytes + r.optimizer_bytes
        model_state = corrected(ctx, spec)
        corrected_bytes = sum(model_state.total(k) for k in ("params", "grads", "optimizer"))
        seed = total(M.t1_model_state(N, x, x))
        rows[label] = {"seed (x+y+12)N": seed, "measured": measured, "measured bytes/param": round(measured / N, 4),
                       "weights": r.params_bytes, "grads": r.grads_bytes, "optimizer": r.optimizer_bytes,
                       "corrected": corrected_bytes, "rel_error": rel_error(seed, measured)}
        first = first or (spec, seed, measured, corrected_bytes)
    spec, seed, measured, corrected_bytes = first
    per_param = lambda row, k: row[k] / N  # noqa: E731
    twelve = [label for label, row in rows.items() if round(per_param(row, "optimizer")) == 12]
    return judge(
        "T1", predicted=seed, measured=measured, unit="bytes", tolerance=0.01, loose=0.10,
        explanation=("Measured bytes per parameter (weights + gradients + optimizer state), seed's (x+y+12) in brackets: "
                     + "; ".join(f"{label} {per_param(row, 'weights'):.0f} + {per_param(row, 'grads'):.0f} + "
                                 f"{per_param(row, 'optimizer'):.0f} = {per_param(row, 'measured'):.0f} "
                                 f"({per_param(row, 'seed (x+y+12)N'):.0f})" for label, row in rows.items())
                     + ". torch keeps autocast's weights and gradients in fp32 with no second master copy, Adam's two "
                     "moments follow the parameters' dtype and SGD keeps none, so the '12 bytes of fp32 optimizer state' "
                     + (f"holds only for {', '.join(twelve)}" if twelve else "holds for none of these configurations")),
        corrected="(p_w + p_w + k·p_w)·N + 4·T: p_w = bytes of the stored weights (4 under autocast), k = 2 for Adam(W) "
                  "(exp_avg, exp_avg_sq), 0 for SGD; T parameter tensors (Adam's fp32 step counters)",
        corrected_value=corrected_bytes, evidence={"model": name, "N": N, "T": T, "cases": rows},
        backend=ctx.backend, command=cmd(ctx, spec),
    )


def t2(ctx: Context):
    name = "gpt2"
    _, N, T = model_facts(ctx, name)
    spec = MemorySpec(model=name, dtype="fp32", optimizer="adamw", batch=2, seq=512, attn="eager")
    r = run(ctx, spec)
    steady = r.snapshots["steady"]["total"]
    idle = r.phases.get("idle", 0)
    seed = total(M.t2_steady(N, spec.batch, spec.seq))
    bf16 = run(ctx, dataclasses.replace(spec, dtype="bf16"))
    return judge(
        "T2", predicted=seed, measured=steady, unit="bytes", tolerance=0.01, loose=0.10,
        explanation=(f"For fp32 AdamW the state held after the optimizer step (weights, grads, Adam m and v, int64 ids) is "
                     f"16N + 8BD + 4T to the byte ({steady:,}); but torch's zero_grad(set_to_none=True) frees the grads, so "
                     f"between steps only {idle:,} bytes (12N + 8BD + 4T) stay, and pure bf16 holds half of each"),
        corrected="p_w·N weights + p_w·N grads (until zero_grad) + 2·p_w·N + 4T Adam + 8·B·S ids",
        corrected_value=total(M.weights(N, 4)) + total(M.gradients(N, 4)) + total(M.optimizer_state(N, T, 4, "adamw")) + 8 * spec.batch * spec.seq,
        evidence={"model": name, "N": N, "B": spec.batch, "D = S": spec.seq, "after step (grads held)": steady,
                  "after zero_grad(set_to_none)": idle, "seed 16N+8BD": seed, "rel_error after zero_grad": rel_error(seed, idle),
                  "pure bf16 after step": bf16.snapshots["steady"]["total"]},
        backend=ctx.backend, command=cmd(ctx, spec),
    )


def _t3_figures(ctx: Context, spec: MemorySpec) -> dict:
    from verify.predict.memory import covered

    s, N, _ = model_facts(ctx, spec.model)
    r = run(ctx, spec)
    out = {"activations measured": r.activations_bytes, "peak measured": r.peak_bytes, "peak phase": r.peak_phase,
           "M_act seed": total(M.t3_activations(s.L, spec.batch, spec.seq, s.h, s.V)),
           "M_peak seed": total(M.t3_peak(N, s.L, spec.batch, spec.seq, s.h, s.V))}
    out["M_act rel_error"] = rel_error(out["M_act seed"], r.activations_bytes)
    out["M_peak rel_error"] = rel_error(out["M_peak seed"], r.peak_bytes)
    if covered(s, spec) is None:
        pr = corrected(ctx, spec)
        out["activations corrected"] = pr.total("activations")
        out["peak corrected"] = pr.peak_bytes
    return out


def t3_sweep(ctx: Context) -> list[dict]:
    """Seed M_act, measured and corrected activations over B, S, L and h (config overrides of
    tinyllama-1.1b with few layers: the point holds at any size)."""
    from verify.build import build
    from verify.measure.sweeps import config_with
    from verify.predict.memory import predict

    rows = []
    for B, S, L, h in ((1, 256, 2, 2048), (4, 256, 2, 2048), (1, 512, 2, 2048), (1, 256, 4, 2048), (1, 256, 2, 1024)):
        config = config_with("tinyllama-1.1b", num_hidden_layers=L, hidden_size=h, head_dim=h // 32)
        s = shape(config)
        spec = MemorySpec(model="tinyllama-1.1b", dtype="fp32", batch=B, seq=S, attn="eager")
        r = run(ctx, spec, num_hidden_layers=L, hidden_size=h, head_dim=h // 32)
        seed = total(M.t3_activations(s.L, B, S, s.h, s.V))
        corr = predict(s, spec, len(list(build(config, device="meta").parameters()))).total("activations")
        rows.append({"B": B, "S": S, "L": L, "h": h, "measured": r.activations_bytes, "M_act seed": seed,
                     "seed rel_error": rel_error(seed, r.activations_bytes), "corrected": corr,
                     "corrected rel_error": rel_error(corr, r.activations_bytes)})
    return rows


def t3(ctx: Context):
    main = MemorySpec(model="tinyllama-1.1b", dtype="fp32", optimizer="adamw", batch=1, seq=1024, attn="eager")
    others = {
        "tinyllama-1.1b fp32 sdpa": dataclasses.replace(main, attn="sdpa"),
        "gpt2 fp32 eager B=1 S=1024 (seed 001's architecture; dropout)": MemorySpec(model="gpt2", dtype="fp32", batch=1, seq=1024, attn="eager"),
    }
    f = _t3_figures(ctx, main)
    evidence = {"tinyllama-1.1b fp32 eager B=1 S=1024": f, **{k: _t3_figures(ctx, v) for k, v in others.items()},
                "sweep over B, S, L, h (tinyllama-1.1b family, fp32 eager)": t3_sweep(ctx)}
    return judge(
        "T3", predicted=f["M_act seed"], measured=f["activations measured"], unit="bytes", tolerance=ACT_TOL, loose=ACT_LOOSE,
        explanation=(f"M_act = L(14E+4BSS)+6BSV gives {gb(f['M_act seed'])} against {gb(f['activations measured'])} measured "
                     f"({f['M_act rel_error']:+.0%}): it keeps one S×S score matrix per layer where eager attention keeps an "
                     "fp32 softmax per head, misses the gated MLP's four n·f tensors and RMSNorm's fp32 copies; M_peak "
                     f"{gb(f['M_peak seed'])} against {gb(f['peak measured'])} ({f['M_peak rel_error']:+.0%}); the measured "
                     f"peak is at the {f['peak phase']} phase"),
        corrected="verify.predict.memory: activations tensor by tensor (" + _terms_named(corrected(ctx, main)) + "); " + _peak_named(corrected(ctx, main)),
        corrected_value=f.get("activations corrected"), evidence=evidence, backend=ctx.backend, command=cmd(ctx, main),
    )


def t4(ctx: Context):
    name = "llama-7b"
    s, _, _ = model_facts(ctx, name)
    eager = MemorySpec(model=name, dtype="bf16", batch=1, seq=2048, attn="eager")
    sdpa = dataclasses.replace(eager, attn="sdpa")
    p = dtype_bytes(eager.dtype)
    args = (s.L, s.heads, eager.batch, eager.seq, s.h, p)
    left, right = total(M.t4_left(*args)), total(M.t4_right(*args))
    re, rs = run(ctx, eager), run(ctx, sdpa)
    corrected_eager = corrected(ctx, eager).total("activations")
    lower_bound_eager = re.activations_bytes >= right
    lower_bound_sdpa = rs.activations_bytes >= right
    return judge(
        "T4", predicted=right, measured=re.activations_bytes, unit="bytes", tolerance=ACT_TOL, loose=ACT_LOOSE,
        explanation=(f"LLaMA-7B bf16 B=1 S=2048: the seed's final form gives {gb(right)}; eager attention keeps "
                     f"{gb(re.activations_bytes)} ({rel_error(right, re.activations_bytes):+.0%}), SDPA {gb(rs.activations_bytes)} "
                     f"({rel_error(right, rs.activations_bytes):+.0%}); it is a lower bound for "
                     f"{'eager' if lower_bound_eager else 'neither eager'}{' and SDPA' if lower_bound_sdpa else ' but not SDPA'}: "
                     "SDPA never stores the a·s·s scores, so the as/h terms vanish"),
        inconsistency=(f"the two sides disagree: L(9bshp + bsh + 2abssp + abss + 2bshp) = Lbshp[11 + 1/p + (as/h)(2 + 1/p)], "
                       f"not Lbshp[16 + 2/p + (as/h)(2 + 1/p)]; here {left:,} vs {right:,} bytes"),
        corrected="verify.predict.memory activations, eager: " + _terms_named(corrected(ctx, eager))
                  + "; SDPA: " + _terms_named(corrected(ctx, sdpa)),
        corrected_value=corrected_eager,
        evidence={"left side": left, "right side": right, "eager measured": re.activations_bytes, "sdpa measured": rs.activations_bytes,
                  "eager rel_error (right side)": rel_error(right, re.activations_bytes),
                  "sdpa rel_error (right side)": rel_error(right, rs.activations_bytes),
                  "lower bound for eager": lower_bound_eager, "lower bound for sdpa": lower_bound_sdpa,
                  "corrected eager": corrected_eager, "corrected sdpa": corrected(ctx, sdpa).total("activations")},
        backend=ctx.backend, command=cmd(ctx, eager),
    )


def t5(ctx: Context):
    from verify.measure.sweeps import slope

    name, layers = "tinyllama-1.1b", 4  # per-layer growth: four of its 22 layers show it at a fifth of the cost
    seqs = (256, 512, 768)
    base = MemorySpec(model=name, dtype="bf16", batch=1, seq=seqs[0])
    curves = {}
    for label, attn, ckpt in (("eager", "eager", False), ("sdpa", "sdpa", False), ("sdpa + checkpointing", "sdpa", True)):
        pts = [(S, run(ctx, dataclasses.replace(base, seq=S, attn=attn, checkpointing=ckpt), num_hidden_layers=layers).activations_bytes)
               for S in seqs]
        curves[label] = {"points": pts, **slope(pts)}
    grows = all(all(b[1] > a[1] for a, b in zip(c["points"], c["points"][1:])) for c in curves.values())
    lin = curves["sdpa"]["second_difference"][0]
    quad = curves["eager"]["second_difference"][0]
    return judge(
        "T5", predicted="activations grow with the sequence length", unit="text",
        measured=f"grow in every case; SDPA linear (second difference {lin:,} bytes), eager quadratic (second difference {quad:,} bytes)",
        verdict=Verdict.CONFIRMED if grows else Verdict.REFUTED, tolerance=None,
        explanation=(f"{name} ({layers} layers) bf16 S = {', '.join(map(str, seqs))}: activations rise with S under eager, "
                     "SDPA and checkpointing; linearly with SDPA (the S² scores are never stored), quadratically with eager"),
        evidence={"model": name, "dtype": base.dtype, "num_hidden_layers": layers, **curves}, backend=ctx.backend, command=f"python -m verify claims --only T5 --backend {ctx.backend} --json",
    )


# --- I: inference ---------------------------------------------------------------------------


def i1(ctx: Context):
    name = "gpt2"
    _, N, _ = model_facts(ctx, name)
    model_bytes = total(M.weights(N, 4))
    table = {}
    for B, S in ((1, 128), (1, 1024), (8, 128), (8, 1024)):
        tr = run(ctx, MemorySpec(model=name, dtype="fp32", batch=B, seq=S, attn="eager"))
        ge = run(ctx, MemorySpec(model=name, mode="generate", dtype="fp32", batch=B, seq=S - 16, new_tokens=16, attn="eager"))
        table[f"B={B} S={S}"] = {"train peak / model": round(tr.peak_bytes / model_bytes, 3),
                                 "generate peak / model": round(ge.peak_bytes / model_bytes, 3),
                                 "train peak": tr.peak_bytes, "generate peak": ge.peak_bytes}
    main = MemorySpec(model=name, dtype="fp32", batch=1, seq=1024, attn="eager")
    r = run(ctx, main)
    train_ratios = [v["train peak / model"] for v in table.values()]
    gen_ratios = [v["generate peak / model"] for v in table.values()]
    return judge(
        "I1", predicted=4 * model_bytes, measured=r.peak_bytes, unit="bytes", tolerance=ACT_TOL, loose=ACT_LOOSE,
        explanation=(f"GPT-2 fp32 ({gb(model_bytes)} of weights): a training step with AdamW peaks at "
                     f"{min(train_ratios):.1f}–{max(train_ratios):.1f} × the model (the weights, grads and Adam state alone are 4×, "
                     f"plus foreach temporaries and activations), generation at {min(gen_ratios):.1f}–{max(gen_ratios):.1f} ×; "
                     "neither multiple is a constant: both grow with batch and sequence"),
        corrected="verify.predict.memory, the training step's " + _peak_named(corrected(ctx, main)),
        corrected_value=corrected(ctx, main).peak_bytes,
        evidence={"model bytes (fp32)": model_bytes, "ratios": table}, backend=ctx.backend, command=cmd(ctx, main),
    )


def i2(ctx: Context):
    name = "llama-7b"
    train = MemorySpec(model=name, dtype="bf16", batch=1, seq=2048, attn="sdpa")
    gen = MemorySpec(model=name, mode="generate", dtype="bf16", batch=1, seq=2048, new_tokens=16, attn="sdpa")
    tr, ge = run(ctx, train), run(ctx, gen)
    sgd = run(ctx, dataclasses.replace(train, optimizer="sgd", seq=512))
    gen512 = run(ctx, dataclasses.replace(gen, seq=512))
    bound = total(M.i2_inference_bound(tr.peak_bytes))
    holds = ge.peak_bytes <= bound
    return judge(
        "I2", predicted=bound, measured=ge.peak_bytes, unit="bytes", tolerance=None,
        verdict=Verdict.CONFIRMED if holds else Verdict.REFUTED,
        explanation=(f"Holds for AdamW, not in general. LLaMA-7B bf16 B=1 S=2048: generation peaks at {gb(ge.peak_bytes)}, "
                     f"{ge.peak_bytes / tr.peak_bytes:.3f} of the AdamW training peak {gb(tr.peak_bytes)}; the bound holds "
                     f"because AdamW's state and foreach step make training ≥ 5× the weights, but with SGD at S=512 "
                     f"the ratio is {gen512.peak_bytes / sgd.peak_bytes:.3f}"),
        evidence={"train peak (AdamW)": tr.peak_bytes, "generate peak": ge.peak_bytes, "ratio": ge.peak_bytes / tr.peak_bytes,
                  "train peak (SGD, S=512)": sgd.peak_bytes, "generate peak (S=512)": gen512.peak_bytes,
                  "ratio SGD S=512": gen512.peak_bytes / sgd.peak_bytes},
        backend=ctx.backend, command=cmd(ctx, gen),
    )


def i3(ctx: Context):
    name = "llama-7b"
    s, N, _ = model_facts(ctx, name)
    main = MemorySpec(model=name, mode="generate", dtype="bf16", batch=1, seq=2048, new_tokens=16, attn="sdpa")
    r = run(ctx, main)
    seed = 14 * 10**9
    big = run(ctx, dataclasses.replace(main, batch=8))
    kv = total(M.kv_cache(s.L, 1, M.cached_positions(2048, 16), s.kv_heads, s.head_dim, 2))
    return judge(
        "I3", predicted=seed, measured=r.peak_bytes, unit="bytes", tolerance=SIZE_TOL, loose=SIZE_LOOSE,
        explanation=(f"LLaMA-7B bf16, 2048-token prompt, 16 new tokens: the peak is {gb(r.peak_bytes)} = weights "
                     f"{gb(r.params_bytes)} + KV cache {gb(r.kv_cache_bytes)} + prefill working memory "
                     f"{gb(r.activations_bytes)}; not weights only, and at batch 8 it is {gb(big.peak_bytes)} "
                     f"({rel_error(seed, big.peak_bytes):+.0%} against 14 GB)"),
        corrected="N·p + 2·L·B·T·n_kv·d_head·p (KV) + prefill working set (logits of the last position, MLP intermediates)",
        corrected_value=total(M.weights(N, 2)) + kv,
        evidence={"weights": r.params_bytes, "kv_cache": r.kv_cache_bytes, "working memory": r.activations_bytes,
                  "peak": r.peak_bytes, "peak phase": r.peak_phase, "peak at batch 8": big.peak_bytes,
                  "kv at batch 8": big.kv_cache_bytes},
        backend=ctx.backend, command=cmd(ctx, main),
    )


def i4(ctx: Context):
    rows = {}
    first = None
    for name in ("llama3-8b", "llama-7b"):
        s, _, _ = model_facts(ctx, name)
        spec = MemorySpec(model=name, mode="generate", dtype="bf16", batch=2, seq=512, new_tokens=8, attn="sdpa")
        r = run(ctx, spec)
        T = M.cached_positions(spec.seq, spec.new_tokens)
        formula = total(M.kv_cache(s.L, spec.batch, T, s.kv_heads, s.head_dim, 2))
        mha_style = total(M.kv_cache(s.L, spec.batch, T, s.heads, s.head_dim, 2))
        rows[name] = {"kv heads": s.kv_heads, "heads": s.heads, "T cached": T, "formula": formula, "measured": r.kv_cache_bytes,
                      "2·L·b·s·h·p (ignoring GQA)": mha_style}
        first = first or (spec, formula, r.kv_cache_bytes)
    spec, formula, measured = first
    return judge(
        "I4", predicted=formula, measured=measured, unit="bytes", tolerance=0.0,
        explanation=("the KV tensors read from transformers' DynamicCache equal 2·L·b·s·n_kv·d_head·p to the byte for GQA "
                     "(Llama-3-8B, 8 of 32 heads) and MHA (LLaMA-7B), with s = prompt + new tokens − 1; counting all heads "
                     "(2·L·b·s·h·p) would overstate Llama-3-8B's cache 4×"),
        evidence=rows, backend=ctx.backend, command=cmd(ctx, spec),
    )


# --- the seeds' figures beside one run (the `memory --seeds` table) -------------------------


def seed_predictions(shape, spec, result, companion=None) -> dict[str, dict]:
    """The seeds' figures for the run `spec` of the model `shape`, beside the measured `result`
    (a MemoryResult), each with its relative error. `companion`: the result of the other mode on
    the same model, dtype, batch and prompt (I2 compares generation with training)."""
    N = total(exact(shape))
    p = dtype_bytes(spec.dtype)
    B, S = spec.batch, spec.seq
    rows: dict[str, tuple[str, str, int, int]] = {}  # name -> (claim, formula, predicted, measured)
    model_bytes = total(M.weights(N, p))
    if spec.mode == "train":
        state = result.params_bytes + result.grads_bytes + result.optimizer_bytes
        rows["T1 (x+y+12)N"] = ("T1", f"x = y = {p}", total(M.t1_model_state(N, p, p)), state)
        steady = result.snapshots.get("steady", {}).get("total", 0) - result.buffers_bytes
        rows["T2 M_steady = 16N+8BD"] = ("T2", "D = S", total(M.t2_steady(N, B, S)), steady)
        rows["T3 M_act = L(14E+4BSS)+6BSV"] = ("T3", "E = BSH", total(M.t3_activations(shape.L, B, S, shape.h, shape.V)), result.activations_bytes)
        rows["T3 M_peak = M_steady+M_act+4BSV"] = ("T3", "", total(M.t3_peak(N, shape.L, B, S, shape.h, shape.V)), result.peak_bytes)
        args = (shape.L, shape.heads, B, S, shape.h, p)
        rows["T4 L(9bshp+bsh+2abssp+abss+2bshp)"] = ("T4", f"p = {p}", total(M.t4_left(*args)), result.activations_bytes)
        rows["T4 Lbshp[16+2/p+(as/h)(2+1/p)]"] = ("T4", f"p = {p}", total(M.t4_right(*args)), result.activations_bytes)
        rows["I1 training ≈ 4 × model"] = ("I1", "model = N·p", total(M.i1_working_memory(model_bytes, "train")), result.peak_bytes)
        if companion is not None:
            rows["I2 inference ≤ training/4"] = ("I2", "bound on the generation peak", total(M.i2_inference_bound(result.peak_bytes)), companion.peak_bytes)
    else:
        rows["I1 inference ≈ 2 × model"] = ("I1", "model = N·p", total(M.i1_working_memory(model_bytes, "generate")), result.peak_bytes)
        if companion is not None:
            rows["I2 inference ≤ training/4"] = ("I2", "bound on the generation peak", total(M.i2_inference_bound(companion.peak_bytes)), result.peak_bytes)
        rows["I3 weights only N·p"] = ("I3", "", total(M.i3_weights_only(N, p)), result.peak_bytes)
        T = M.cached_positions(S, spec.new_tokens)
        rows["I4 KV = 2·L·B·T·n_kv·d_head·p"] = ("I4", f"T = {T}", total(M.kv_cache(shape.L, B, T, shape.kv_heads, shape.head_dim, p)), result.kv_cache_bytes)
    return {
        name: {"claim": c, "formula": f, "predicted": pred, "measured": meas, "rel_error": rel_error(pred, meas)}
        for name, (c, f, pred, meas) in rows.items()
    }

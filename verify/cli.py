"""`python -m verify COMMAND ...`: params, memory, fit, shard, claims, report, external.

Bad input exits with status 2 and one line on stderr naming what is wrong and what would work.
"""

from __future__ import annotations

import argparse
import json
import sys

from verify.units import DEFAULT_PRECISION, fmt_count, fmt_rel, rel_error


class UsageError(Exception):
    """Input the tool cannot use; printed as one line, exit status 2."""


DEFAULT_SEQ = 2048  # the sequence length of memory and shard, and of fit when --seq is not given


def _model(name: str, allow_download: bool = False):
    from verify.configs import ConfigError, load_config, shape

    try:
        config = load_config(name, allow_download)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    return config, shape(config)


# --- params ---------------------------------------------------------------------------------


def params_report(name: str, allow_download: bool = False) -> dict:
    """Count MODEL on the meta device and put the seed formulas beside the count (for a family the
    registry does not cover: the count alone, and a note saying so)."""
    from verify.build import build
    from verify.families import not_in_registry
    from verify.formulas import params as F
    from verify.measure.params import count

    config, s = _model(name, allow_download)
    try:
        pc = count(build(config, device="meta"))
    except ValueError as e:
        raise UsageError(str(e)) from None
    if s.family is None:
        return {"model": s.name, "family": None, "note": not_in_registry(s.model_type), "shape": s.as_dict(),
                **pc.as_dict(), "formulas": None}
    comp = pc.by_component
    per_term = [  # (component, measured, seed term, seed's formula, claim)
        ("attention", comp.get("attention", 0), F.total(F.attention_4h2(s.h)) * s.L, "L·4h²", "P1"),
        ("mlp + experts + router", comp.get("mlp", 0) + comp.get("experts", 0) + comp.get("router", 0),
         F.total(F.mlp_8h2(s.h)) * s.L, "L·8h²", "P2"),
        ("norms", comp.get("norms", 0), F.total(F.layernorm_2h(s.h, s.L)), "(2L+1)·2h", "P3"),
        ("embedding", comp.get("embedding", 0), F.total(F.embedding_Vh(s.V, s.h)), "Vh", "P4"),
        ("output head", comp.get("output_head", 0), F.total(F.output_head(s.V, s.h, s.tied)), "0 tied / Vh untied", "P5"),
        ("positions", comp.get("positions", 0), F.total(F.positions_Nh(s.max_positions, s.h, s.positions)),
         "Nh learned / 0 RoPE, ALiBi", "P6"),
    ]
    if comp.get("embedding_projections"):  # OPT's project_in/out: no seed formula has them
        per_term.append(("embedding projections", comp["embedding_projections"], 0, "none", "-"))
    totals = [
        ("12Lh²+Vh", F.total(F.total_approx(s.L, s.h, s.V)), "P7"),
        ("L(12h²+4h)+Vh+2h", F.total(F.total_full(s.L, s.h, s.V)), "P7"),
        ("closed form (formulas.params.exact)", F.total(F.exact(s)), "-"),
    ]
    return {
        "model": s.name,
        "family": s.family,
        "shape": s.as_dict(),
        **pc.as_dict(),
        "formulas": {
            "components": [
                {"component": c, "measured": m, "formula": f, "predicted": p, "claim": cid, "rel_error": rel_error(p, m)}
                for c, m, p, f, cid in per_term
            ],
            "totals": [
                {"formula": f, "predicted": p, "claim": cid, "rel_error": rel_error(p, pc.total)} for f, p, cid in totals
            ],
            "missed_by_L(12h²+4h)+Vh+2h": F.p7_corrections(s),
        },
    }


def cmd_params(args) -> int:
    from tabulate import tabulate

    r = params_report(args.model, args.allow_download)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    s = r["shape"]
    print(f"{r['model']} ({s['model_type']}, family {r['family']}): h={s['h']} L={s['L']} V={s['V']} heads={s['heads']} "
          f"kv_heads={s['kv_heads']} d_ff={s['ffn']} experts={s['experts']} tied={s['tied']} positions={s['positions']}")
    print(f"total parameters (tied counted once): {fmt_count(r['total'])}; trainable {fmt_count(r['trainable'])}")
    if r["tied"]:
        print("tied: " + "; ".join(f"{a} = {b}" for a, b in r["tied"]))
    print()
    print(tabulate([(k, f"{v:,}") for k, v in r["by_kind"].items()], headers=["kind", "params"], colalign=("left", "right")))
    print()
    if r["formulas"] is None:
        print(tabulate([(k, f"{v:,}") for k, v in r["by_component"].items()], headers=["component", "params"],
                       colalign=("left", "right")))
        print()
        print(r["note"])
        return 0
    rows = [(c["component"], f"{c['measured']:,}", c["formula"], f"{c['predicted']:,}", fmt_rel(c["rel_error"]), c["claim"])
            for c in r["formulas"]["components"]]
    print(tabulate(rows, headers=["component", "measured params", "seed formula", "seed params", "error", "claim"],
                   colalign=("left", "right", "left", "right", "right", "left")))
    print()
    rows = [(t["formula"], f"{t['predicted']:,}", f"{r['total']:,}", fmt_rel(t["rel_error"]), t["claim"]) for t in r["formulas"]["totals"]]
    print(tabulate(rows, headers=["total formula", "predicted params", "measured params", "error", "claim"],
                   colalign=("left", "right", "right", "right", "left")))
    missed = r["formulas"]["missed_by_L(12h²+4h)+Vh+2h"]
    if missed:
        print()
        print(tabulate([(k, f"{v:+,}") for k, v in missed.items()], headers=["what L(12h²+4h)+Vh+2h misses", "params"],
                       colalign=("left", "right")))
    return 0


# --- GPUs, settings and progress shared by memory, shard and fit ----------------------------


def _budget(args, required: bool = False):
    """The memory budget `--gpu NAME` or `--gpu-gib G` names (verify.gpus), None if neither."""
    import math

    from verify import gpus

    if getattr(args, "gpu_gb", None) is not None:
        raise UsageError("--gpu-gb is gone (it counted 10^9 bytes, while a card's total is binary: an \"80 GB\" H100 "
                         "has 81,559 MiB); use --gpu NAME (" + ", ".join(gpus.names()) + ") or --gpu-gib G")
    if args.gpu is not None and args.gpu_gib is not None:
        raise UsageError(f"give --gpu or --gpu-gib, not both (got --gpu {args.gpu} and --gpu-gib {args.gpu_gib:g})")
    if args.gpu_gib is not None:
        if not (args.gpu_gib > 0 and math.isfinite(args.gpu_gib)):
            raise UsageError(f"--gpu-gib must be a positive number of GiB, got {args.gpu_gib:g}")
        return gpus.custom(args.gpu_gib)
    if args.gpu is not None:
        try:
            return gpus.lookup(args.gpu).budget()
        except ValueError as e:
            raise UsageError(str(e)) from None
    if required:
        raise UsageError("say which GPU: --gpu NAME (" + ", ".join(gpus.names()) + ") or --gpu-gib G")
    return None


def _budget_line(b) -> str:
    from verify.units import fmt_bytes, fmt_gb_gib

    if not b.context_bytes and not b.margin_bytes:
        return f"{b.name}: usable {fmt_gb_gib(b.usable_bytes)} ({b.total_is})"
    return (f"{b.name}: usable {fmt_gb_gib(b.usable_bytes)} = {fmt_bytes(b.total_bytes)} total ({b.total_is}) "
            f"− {fmt_bytes(b.context_bytes)} CUDA context − {fmt_bytes(b.margin_bytes)} allocator margin (verify/gpus.py)")


def _verdict(peak: int, usable: int) -> str:
    from verify.units import fmt_bytes

    return (f"fits, headroom {fmt_bytes(usable - peak)}" if peak <= usable else
            f"does not fit, over by {fmt_bytes(peak - usable)}")


def _say(text: str, end: str = "\n") -> None:
    print(text, end=end, file=sys.stderr, flush=True)


def _progress_tracker(label: str):
    """A Tracker (verify.measure.tracker) that reports each step of the traced run on stderr as it
    starts: the measurement itself returns data; this callback is the command's."""
    from verify.measure.tracker import Tracker

    class StepReporter(Tracker):
        steps = 0

        def mark(self, phase: str) -> None:
            if phase == "forward":
                self.steps += 1
                _say(f" step {self.steps}/2", end="")
            elif phase in ("prefill", "decode"):
                _say(f" {phase}", end="")
            super().mark(phase)

    _say(f"tracing {label}:", end="")
    return StepReporter()


def _trace(spec, quiet: bool = False):
    """Measure the MemorySpec `spec` (fake tensors, real CPU tensors for backend cpu, or the GPU for
    backend cuda), reporting on stderr."""
    import time

    import torch

    label = f"{spec.model} {spec.mode} B={spec.batch} S={spec.seq}"
    t0 = time.perf_counter()
    try:
        if spec.backend in ("cuda", "cpu"):
            from verify.measure.memory import measure

            result = measure(spec)
        else:
            from verify.measure.fake import run

            result = run(spec, device="fake", tracker=None if quiet else _progress_tracker(label))
    except torch.OutOfMemoryError:
        raise UsageError(f"{spec.model}: {spec.mode} with batch {spec.batch}, seq {spec.seq} does not fit on this GPU "
                         "(out of memory); try --backend fake") from None
    except (ValueError, RuntimeError) as e:  # TraceError, or a model transformers cannot build this way
        if not quiet and spec.backend != "cuda":
            _say("")
        raise UsageError(str(e).splitlines()[0]) from None
    if not quiet and spec.backend != "cuda":
        _say(f" -> peak {result.peak_bytes / 1e9:.3f} GB ({time.perf_counter() - t0:.1f} s)")
    return result


def _memory_spec(args, s, **overrides):
    """The MemorySpec the setting flags describe (memory and fit take the same ones), validated
    against the model's shape `s`."""
    from verify.measure.memory import MemorySpec, validate

    fields = dict(model=args.model, mode=args.mode, backend=getattr(args, "backend", "fake"), dtype=args.dtype,
                  precision=args.precision, optimizer=args.optimizer, batch=args.batch, seq=args.seq,
                  new_tokens=args.new_tokens, attn=args.attn, checkpointing=args.checkpointing, loss=args.loss,
                  gpu_terms=args.gpu_terms, lora_rank=args.lora_rank, lora_targets=args.lora_targets, quant=args.quant,
                  cache=args.cache)
    if args.gpu is not None:  # the CUDA terms the fake backend adds are those of the card asked about
        from verify import gpus

        try:
            fields["gpu_arch"] = gpus.lookup(args.gpu).arch
        except ValueError as e:
            raise UsageError(str(e)) from None
    spec = MemorySpec(**{**fields, **overrides})
    try:
        validate(spec, s)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return spec


def _with_attention(spec, config):
    """`spec` with the attention implementation that will run filled in (transformers' choice when
    --attn was not given), and how it was chosen."""
    import dataclasses

    from verify.measure.memory import attention_used

    if spec.attn is not None:
        return spec, f"{spec.attn} (--attn)"
    try:
        attn = attention_used(spec, config)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return dataclasses.replace(spec, attn=attn), f"{attn} (transformers' choice for {config.model_type})"


# --- memory ---------------------------------------------------------------------------------


def corrected_prediction(spec, result) -> dict:
    """The corrected predictor's terms for this run, their totals and the peak (with its moment),
    and each against the run's measured figure."""
    from verify.predict.memory import prediction_for

    pred = prediction_for(spec)
    measured = {"params": result.params_bytes, "buffers": result.buffers_bytes, "grads": result.grads_bytes,
                "optimizer": result.optimizer_bytes, "activations": result.activations_bytes,
                "kv_cache": result.kv_cache_bytes, "peak": result.peak_bytes}
    totals = {k: pred.total(k) for k in pred.terms}
    if pred.peak_bytes is not None:
        totals["peak"] = pred.peak_bytes
    return {
        "not_covered": pred.not_covered,
        "peak_not_covered": pred.peak_not_covered,
        "terms": pred.terms,
        "moments": pred.moments,
        "peak_moment": pred.peak_moment,
        "peak_moment_terms": pred.moment_terms.get(pred.peak_moment, {}),
        "totals": {k: {"predicted": v, "measured": measured.get(k), "rel_error": rel_error(v, measured.get(k))} for k, v in totals.items()},
    }


def cmd_memory(args) -> int:
    from verify.units import fmt_gb_gib

    budget = _budget(args)
    config, s = _model(args.model, args.allow_download)
    spec = _memory_spec(args, s)
    if spec.backend == "cuda":
        from verify.measure.cuda import require_cuda

        try:
            require_cuda()
        except ValueError as e:
            raise UsageError(str(e)) from None
    spec, attention = _with_attention(spec, config)
    result = _trace(spec, quiet=args.json)
    out = {**result.as_dict(), "attention": attention}
    if budget is not None:
        out["gpu"] = {**budget.as_dict(), "fits": result.peak_bytes <= budget.usable_bytes,
                      "headroom_bytes": budget.usable_bytes - result.peak_bytes}
    if args.seeds:
        out.update(_seed_figures(spec, s, result, quiet=args.json))
    if args.json:
        print(json.dumps(out, indent=2, default=str))
        return 0
    from verify.report import memory_table

    print(memory_table(out))
    print()
    print(f"attention: {attention}")
    if spec.mode in ("train", "lora"):
        print(f"trainable parameters: {fmt_count(result.trainable_params)}")
    if budget is not None:
        print(_budget_line(budget))
        print(f"peak {fmt_gb_gib(result.peak_bytes)} on {budget.name}: {_verdict(result.peak_bytes, budget.usable_bytes)}")
    return 0


def _seed_figures(spec, s, result, quiet: bool) -> dict:
    """--seeds: the seed formulas' predictions (claims T1-T4, I1, I2) and the corrected predictor
    beside the run; I2 compares with a companion run of the other mode (same model, dtype, batch
    and prompt), traced here."""
    import dataclasses

    from verify.claims.memory import seed_predictions

    if spec.mode == "lora":  # the seeds speak of full training and inference; the predictor models neither LoRA nor a quantized base
        return {"predictions": {}, "corrected": {"not_covered": "LoRA runs are measured only: the corrected predictor models full training"}}
    if spec.quant != "none":
        return {"predictions": {}, "corrected": {"not_covered": "quantized weights are measured only: the seed formulas and "
                                                                "the corrected predictor count weights in --dtype"}}
    other = dataclasses.replace(spec, mode="generate" if spec.mode == "train" else "train", precision="pure",
                                checkpointing=False)
    try:
        companion = _trace(other, quiet=quiet)
    except UsageError:  # the other mode may not run here (OOM on a GPU, a mode the model lacks)
        companion = None
    if s.family is None:  # no closed form: no N for the seeds' formulas, no predictor
        from verify.families import not_in_registry

        out = {"family": None, "note": not_in_registry(s.model_type), "predictions": {},
               "corrected": {"not_covered": not_in_registry(s.model_type)}}
    else:
        try:
            corrected = corrected_prediction(spec, result)
        except ValueError as e:  # an optimizer whose closed forms need what the predictor is not given
            corrected = {"not_covered": f"the corrected predictor does not cover --optimizer {spec.optimizer} ({e})"}
        out = {"predictions": seed_predictions(s, spec, result, companion), "corrected": corrected}
    if companion is not None:
        out["companion"] = {k: v for k, v in companion.as_dict().items() if k.endswith("_bytes") or k == "spec"}
    return out


# --- shard ----------------------------------------------------------------------------------


def _shard_mode(mode: str) -> str:
    """The CLI's mode name -> ShardSpec's: generate (the prefill of the prompt) is ShardSpec's
    "infer"; `--mode infer` still works and says so."""
    if mode == "infer":
        _say("note: --mode infer is now --mode generate (the same run: the prefill of a --seq token prompt)")
    return "infer" if mode in ("generate", "infer") else mode


def _measure_shard(spec, quiet: bool = False) -> dict:
    import time

    from verify.measure.shard import measure_shard

    t0 = time.perf_counter()
    if not quiet:
        _say(f"tracing {spec.model} {spec.strategy} N={spec.world_size} B={spec.batch} S={spec.seq} on a fake process group ...", end="")
    r = measure_shard(spec)
    if not quiet:
        _say(f" -> per-rank peak {r['per_rank']['peak_bytes'] / 1e9:.3f} GB ({time.perf_counter() - t0:.1f} s)")
    return r


def _shard_spec(args, s, **fields):
    """The ShardSpec the setting flags describe (shard and fit take the same ones; `fields`: world_size,
    strategy, batch, seq), validated against the model's shape `s`."""
    from verify.measure.shard import ShardSpec, validate_shard

    spec = ShardSpec(model=args.model, mode=_shard_mode(args.mode), dtype=args.dtype, precision=args.precision,
                     optimizer=args.optimizer, checkpointing=args.checkpointing, **fields)
    try:
        validate_shard(spec, s)
    except ValueError as e:
        raise UsageError(str(e).replace("infer", "generate")) from None
    return spec


def cmd_shard(args) -> int:
    from verify.predict.shard import min_world_size

    budget = _budget(args, required=args.min_n)
    _, s = _model(args.model, args.allow_download)
    spec = _shard_spec(args, s, world_size=args.world_size, strategy=args.strategy, batch=args.batch, seq=args.seq)
    if args.min_n:
        result = min_world_size(spec, budget.usable_bytes, lambda sp: _measure_shard(sp, args.json), reference_n=spec.world_size)
        result["gpu"] = budget.as_dict()
    else:
        result = _measure_shard(spec, args.json)
        if budget is not None:
            peak = result["per_rank"]["peak_bytes"]
            result.update(gpu=budget.name, usable_bytes=budget.usable_bytes, fits=peak <= budget.usable_bytes,
                          headroom_bytes=budget.usable_bytes - peak)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    elif args.min_n:
        from verify.units import fmt_bytes

        n = result["min_world_size"]
        how = "measured at N and N-1" if result["confirmed"] else "from the run at N=%d, not confirmed" % result["reference_n"]
        print(_budget_line(budget))
        print(f"{args.model}: smallest world size whose per-rank peak fits {budget.name}: "
              + (f"{n} ({how})" if n else "none up to 1024"))
        for k, v in sorted(result["measured_peaks"].items()):
            print(f"  N={k}: measured per-rank peak {fmt_bytes(v)}: {_verdict(v, budget.usable_bytes)}")
    else:
        from verify.report import shard_table

        print(shard_table(result))
        if budget is not None:
            print(_budget_line(budget))
    return 0


# --- fit ------------------------------------------------------------------------------------

MAX_BATCH = 1 << 16  # the largest batch `fit` searches
UNBOUNDED_SEQ = 1 << 20  # the longest sequence `fit` searches for a model without a position limit (ALiBi)


def _fit_question(args) -> str:
    """What `fit` answers: max_batch, max_seq, min_gpus, or fits (both B and S given)."""
    if args.strategy is not None and args.world_size is None:
        return "min_gpus"
    if args.batch is not None and args.seq is not None:
        return "fits"
    return "max_seq" if args.batch is not None else "max_batch"


def cmd_fit(args) -> int:
    import dataclasses

    budget = _budget(args, required=True)
    config, s = _model(args.model, args.allow_download)
    question = _fit_question(args)
    sharded = args.strategy is not None or args.world_size is not None
    # the searched value starts at 1 for validation; the search sets it run by run
    batch = args.batch if args.batch is not None else 1
    seq = args.seq if args.seq is not None else (1 if question == "max_seq" else DEFAULT_SEQ)
    if sharded:
        measure_full, spec, attention = _sharded_fit(args, s, batch, seq)
        def measure_at(sp):
            return measure_full(sp)["per_rank"]["peak_bytes"]
    else:
        measure_at, spec, attention = _single_fit(args, s, config, batch, seq)
    out = {"model": args.model, "question": question, "spec": spec.as_dict(), "attention": attention, "gpu": budget.as_dict(),
           "usable_bytes": budget.usable_bytes}
    usable = budget.usable_bytes
    if question == "fits":
        peak = measure_at(spec)
        out.update(fits=peak <= usable, peak_bytes=peak, headroom_bytes=usable - peak)
    elif question == "min_gpus":
        from verify.predict.shard import min_world_size

        found = min_world_size(dataclasses.replace(spec, world_size=2), usable, measure_full)
        n = found["min_world_size"]
        peaks = {int(k): v for k, v in found["measured_peaks"].items()}
        out.update(min_gpus=n, confirmed=found["confirmed"], peak_bytes_at_max=peaks.get(n), peak_bytes_above=peaks.get(n - 1) if n else None,
                   above_is="the per-rank peak at one GPU fewer", measured_peaks=peaks)
        out["spec"] = {**out["spec"], "world_size": None}  # the searched value: min_gpus
    else:
        field = "batch" if question == "max_batch" else "seq"
        out.update(_search(measure_at, spec, s, field, usable, sharded))
        out["spec"] = {**out["spec"], field: None}  # the searched value: max_batch / max_seq
    if args.plot:
        out["plot"] = str(_fit_plot(out, budget, args.plot))
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        print(_fit_text(out, budget))
    return 0


def _single_fit(args, s, config, batch: int, seq: int):
    """(spec -> measured peak, the spec at B and S, attention) of one GPU."""
    if args.mode not in ("train", "generate"):
        raise UsageError(f"mode {args.mode!r}: fit answers for train or generate")
    spec = _memory_spec(args, s, backend="fake", batch=batch, seq=seq)
    spec, attention = _with_attention(spec, config)
    return (lambda sp: _trace(sp, quiet=args.json).peak_bytes), spec, attention


def _sharded_fit(args, s, batch: int, seq: int):
    """(ShardSpec -> measure_shard result, the ShardSpec at B and S, attention) under --strategy."""
    if args.attn is not None or args.loss != "ce" or args.new_tokens != 16:
        raise UsageError("--attn, --loss and --new-tokens are not settings of a sharded run (--world-size/--strategy): "
                         "it runs transformers' default attention, the model's cross-entropy, and the prefill alone")
    spec = _shard_spec(args, s, world_size=args.world_size or 1, strategy=args.strategy or "fsdp", batch=batch, seq=seq)
    return (lambda sp: _measure_shard(sp, quiet=args.json)), spec, "transformers' default for the architecture (sharded runs)"


def _search(measure_at, spec, s, field: str, usable: int, sharded: bool) -> dict:
    """The largest batch or seq that fits, measured at it and one above (verify.predict.fit),
    started where the corrected predictor says (single-GPU runs whose peak it covers; for other
    generations, the exact weights and KV cache)."""
    import dataclasses

    from verify.predict.fit import largest_fitting, predicted_peak, predicted_start, predicts_peak

    if field == "batch":
        limit = MAX_BATCH
    else:
        extra = spec.new_tokens if getattr(spec, "mode", "") == "generate" else 0
        limit = (s.max_positions - extra) if s.max_positions else UNBOUNDED_SEQ
    predicted = (lambda x: None) if sharded else predicted_peak(spec, field)
    start = predicted_start(predicted, usable, limit)
    b = largest_fitting(lambda x: measure_at(dataclasses.replace(spec, **{field: x})), usable, limit, start)
    d = b.as_dict()
    top = min(limit, max(4, 2 * (b.largest + 1)))  # the predictor's curve around the answer, for the plot
    grid = sorted({max(1, round(top * i / 24)) for i in range(25)})
    curve = {x: predicted(x) for x in grid} if start is not None else {}
    return {f"max_{field}": d.pop("largest"), "field": field, "predicted_start": start, **d,
            "predicted_peaks": {x: v for x, v in curve.items() if v is not None},
            "predicted_is_peak": not sharded and predicts_peak(spec)}


def _fit_text(out: dict, budget) -> str:
    from verify.units import fmt_gb_gib

    sp = out["spec"]
    if "world_size" not in sp:
        where = "one GPU"
    elif out["question"] == "min_gpus":
        where = f"{sp['strategy']} ranks, per rank"
    else:
        where = f"N={sp['world_size']} {sp['strategy']} ranks, per rank"
    head = (f"{out['model']} {sp['mode']} {sp['dtype']} {sp['precision']}"
            + (f" {sp['optimizer']}" if sp["mode"] == "train" else "")
            + (" checkpointed" if sp.get("checkpointing") else "") + f", {where}; attention {out['attention']}")
    lines = [head, _budget_line(budget)]
    q = out["question"]
    if q == "fits":
        lines.append(f"B={sp['batch']} S={sp['seq']}: measured peak {fmt_gb_gib(out['peak_bytes'])}: "
                     f"{_verdict(out['peak_bytes'], out['usable_bytes'])}")
        return "\n".join(lines)
    if q == "min_gpus":
        n = out["min_gpus"]
        lines.append(f"fewest GPUs ({sp['strategy']}, B={sp['batch']} S={sp['seq']} per rank): "
                     + (f"{n}" + ("" if out["confirmed"] else " (not confirmed by a run at N-1)") if n else "none up to 1024"))
        for k, v in sorted(out["measured_peaks"].items()):
            lines.append(f"  N={k}: measured per-rank peak {fmt_gb_gib(v)}: {_verdict(v, out['usable_bytes'])}")
        return "\n".join(lines)
    field = out["field"]
    name, other = ("B", f"S={sp['seq']}") if field == "batch" else ("S", f"B={sp['batch']}")
    best = out[f"max_{field}"]
    lines.append(f"largest {'batch' if field == 'batch' else 'sequence'} that fits at {other}: "
                 + (f"{name}={best}" if best else f"none (not even {name}=1)") + ("" if out["complete"] else
                 " (search stopped after its run limit: the peak did not grow steadily)"))
    for x in sorted(k for k in out["measured_peaks"] if best and k in (best, best + 1) or not best and k == 1):
        v = out["measured_peaks"][x]
        lines.append(f"  {name}={x}: measured peak {fmt_gb_gib(v)}: {_verdict(v, out['usable_bytes'])}")
    if best == out["limit"]:
        lines.append(f"  {name}={best} is the largest searched (the model's limit or the search cap)")
    if not out["predicted_start"]:
        how = " (no prediction covers this run)"
    elif out.get("predicted_is_peak"):
        how = ", the corrected predictor's answer"
    else:
        how = ", the answer of the exact weights and KV cache alone (a lower bound of the peak)"
    runs = "run" if out["runs"] == 1 else "runs"
    lines.append(f"  {out['runs']} fake-tensor {runs}, started at {name}={out['start']}{how}")
    return "\n".join(lines)


def _fit_plot(out: dict, budget, path: str):
    from verify.plots import fit_plot

    if out["question"] == "fits":
        points, xlabel = {out["spec"]["batch"]: out["peak_bytes"]}, "batch B"
    elif out["question"] == "min_gpus":
        points, xlabel = out["measured_peaks"], "GPUs N (per-rank peak)"
    else:
        points, xlabel = out["measured_peaks"], "batch B" if out["field"] == "batch" else "sequence length S"
    sp = out["spec"]
    title = f"{out['model']} {sp['mode']} {sp['dtype']} {sp['precision']} on {budget.name}"
    predicted = out.get("predicted_peaks") or {}
    label = "corrected predictor" if out.get("predicted_is_peak") else "exact weights + KV cache (lower bound)"
    return fit_plot({int(k): v for k, v in points.items()}, budget.usable_bytes, budget.total_bytes, xlabel, title, path,
                    predicted={int(k): v for k, v in predicted.items()}, predicted_label=label)


# --- claims and report ----------------------------------------------------------------------


def _progress(i: int, n: int, claim, resumed: bool) -> None:
    took = "resumed " if resumed else "     -  " if claim.seconds is None else f"{claim.seconds:6.1f} s"
    print(f"[{i}/{n}] {claim.id:<4} {claim.verdict:<18} {took}  {claim.explanation[:90]}", file=sys.stderr, flush=True)


def cmd_claims(args) -> int:
    from pathlib import Path

    from verify.claims import ledger

    try:
        claims = ledger.run(backend=args.backend, only=args.only, jsonl=Path(args.jsonl) if args.jsonl else None,
                            progress=None if args.quiet else _progress)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.json:
        print(json.dumps([c.as_dict() for c in claims], indent=2, default=str))
    else:
        from verify.report import claims_table

        print(claims_table(claims))
    return 0


def cmd_report(args) -> int:
    from pathlib import Path

    from verify import report
    from verify.claims.ledger import cuda_available

    if args.backend == "auto" and not args.quiet:
        print("CUDA GPU visible: running every backend (cuda, fake, cpu, meta)" if cuda_available() else
              "no CUDA GPU visible: running the CPU backends (meta, fake, cpu), then the CPU ground-truth sweep (results.json)",
              file=sys.stderr, flush=True)
    try:
        paths = report.write(out_dir=Path(args.out) if args.out else None, backend=args.backend, only=args.only,
                             fresh=args.fresh, progress=None if args.quiet else _progress, command="python -m verify " + " ".join(sys.argv[1:]))
    except ValueError as e:
        raise UsageError(str(e)) from None
    for p in paths:
        print(p)
    return 0


def cmd_external(args) -> int:
    """Reproduce the GPU figures others published (verify/external.py) and write reports/external/."""
    from pathlib import Path

    from verify import external
    from verify.units import fmt_bytes

    def progress(i, n, row, resumed):
        said = row.get("needs") or row.get("error") or ""
        if row.get("ours_bytes") is not None:
            said = (f"ours {fmt_bytes(row['ours_bytes'], 'GB')} vs published {fmt_bytes(row['published_bytes'], 'GB')}"
                    f" ({fmt_rel(row['rel_error'])})")
        took = "resumed" if resumed else f"{row.get('seconds', 0):6.1f} s"
        print(f"[{i}/{n}] {row['id']:<34} {row['status']:<18} {took}  {said[:100]}", file=sys.stderr, flush=True)

    try:
        rows, paths = external.write(out_dir=Path(args.out) if args.out else None, only=args.only, progress=progress,
                                     command="python -m verify " + " ".join(sys.argv[1:]))
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        for p in paths:
            print(p)
    return 0


# --- parser: one function per subcommand's arguments ---------------------------------------


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's default in its help, except flags (off unless given) and defaults of None,
    whose help says what leaving them out means."""

    def _get_help_string(self, action):
        if action.default in (None, False) or "(default" in (action.help or "") or action.help == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


def model_args(q) -> None:
    q.add_argument("model", help="bundled name (see models/), a path to a transformers config.json, or a Hugging Face "
                                 "repo id (org/name: config.json from the local Hugging Face cache)")
    q.add_argument("--allow-download", action="store_true",
                   help="fetch a repo id's config.json (never weights) from the Hugging Face hub when it is not cached "
                        "(or set HF_HUB_OFFLINE=0)")


def gpu_args(q) -> None:
    from verify import gpus

    q.add_argument("--gpu", help="a GPU by name: " + ", ".join(gpus.names()) + " (total as the driver reports it, less "
                                 "the CUDA context and an allocator margin: verify/gpus.py)")
    q.add_argument("--gpu-gib", type=float, help="a GPU memory size in GiB (2^30 bytes), all of it usable")


def setting_args(q, batch: int | None, seq: int | None, modes: tuple[str, ...], mode_help: str) -> None:
    """The flags that describe a run: memory and fit take the same ones."""
    from verify.measure.memory import ATTNS, CACHES, DTYPE_NAMES, LOSSES, MEMORY_OPTIMIZERS, PRECISIONS, QUANTS

    q.add_argument("--mode", choices=modes, default="train", help=mode_help)
    q.add_argument("--dtype", choices=DTYPE_NAMES, default="bf16", help="weight dtype (pure) or compute dtype (mixed)")
    q.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                   help="pure: weights, grads and optimizer state in --dtype (transformers 5 loads checkpoints in their "
                        "own dtype); mixed: fp32 master weights with autocast to --dtype (FSDP mixed precision)")
    q.add_argument("--optimizer", choices=MEMORY_OPTIMIZERS, default="adamw",
                   help="training optimizer: adamw-fused: torch's fused kernel; adamw-8bit: bitsandbytes; adafactor: "
                        "torch.optim.Adafactor; sgd-momentum: momentum 0.9; none: no step")
    q.add_argument("--lora-rank", type=int, default=8, help="LoRA rank r (--mode lora)")
    q.add_argument("--lora-targets", default="",
                   help="modules LoRA adapts (--mode lora): comma-separated names (q_proj,v_proj) or all-linear; "
                        "empty: peft's default for the model type")
    q.add_argument("--quant", choices=QUANTS, default="none",
                   help="bitsandbytes weights: the frozen base of --mode lora, or the model of --mode generate / "
                        "forward: int8 (LLM.int8, load_in_8bit), nf4 (with double quantization: QLoRA), nf4-nodq, "
                        "fp4 (load_in_4bit's defaults: compute in fp32); none: in --dtype")
    q.add_argument("--batch", type=int, default=batch, help="sequences per step (B)" + ("" if batch else
                   "; given alone: find the longest sequence that fits"))
    q.add_argument("--seq", type=int, default=seq, help="training sequence length, or prompt length when generating (S)"
                   + ("" if seq else f"; given alone: find the largest batch that fits (default {DEFAULT_SEQ} when "
                                     "--batch is not given either)"))
    q.add_argument("--new-tokens", type=int, default=16, help="tokens to decode after the prompt (generate)")
    q.add_argument("--cache", choices=CACHES, default="dynamic",
                   help="generate: transformers' DynamicCache (grows a position a step) or StaticCache (preallocated to "
                        "prompt + new tokens - 1)")
    q.add_argument("--attn", choices=ATTNS, help="attention implementation (default: the one transformers picks for "
                                                 "the architecture, sdpa where it has it; the output says which ran)")
    q.add_argument("--checkpointing", action="store_true", help="activation checkpointing of every decoder layer")
    q.add_argument("--loss", choices=LOSSES, default="ce",
                   help="ce: the model's cross-entropy (labels = inputs); sum: logits.sum(), as some benchmarks do (train)")
    q.add_argument("--no-gpu-terms", dest="gpu_terms", action="store_false",
                   help="fake backend: the trace alone, without the modelled CUDA terms (verify/formulas/cuda.py)")


def params_args(q) -> None:
    model_args(q)
    q.add_argument("--json", action="store_true", help="print one JSON object")


def memory_args(q) -> None:
    model_args(q)
    setting_args(q, batch=1, seq=DEFAULT_SEQ, modes=("train", "lora", "generate", "forward"), mode_help="train: one optimizer step; lora: a step of peft's LoRA (--lora-*, --quant); generate: prefill + decode; "
                                                      "forward: one no-grad forward")
    q.add_argument("--backend", choices=("fake", "cpu", "cuda"), default="fake",
                   help="fake: fake tensors (any size); cpu: real CPU tensors, the CPU allocator's peak; cuda: this machine's GPU")
    gpu_args(q)
    q.add_argument("--seeds", action="store_true",
                   help="also the seed formulas (claims T1-T4, I1, I2, with a companion run of the other mode) and the "
                        "corrected predictor beside the measurement")
    q.add_argument("--json", action="store_true", help="print one JSON object")


def shard_args(q) -> None:
    from verify.measure.memory import DTYPE_NAMES, OPTIMIZERS, PRECISIONS

    model_args(q)
    q.add_argument("--world-size", type=int, required=True, help="N ranks (with --min-n: the N measured first)")
    q.add_argument("--strategy", default="fsdp", help="ddp | fsdp | zero2 | zero3")
    q.add_argument("--mode", default="train", help="train (one optimizer step) | generate (prefill of a --seq token prompt)")
    q.add_argument("--dtype", choices=DTYPE_NAMES, default="bf16", help="weight dtype (pure) or compute dtype (mixed)")
    q.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
                   help="pure: all in --dtype; mixed: fp32 sharded master weights, compute in --dtype")
    q.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw", help="training optimizer")
    q.add_argument("--batch", type=int, default=1, help="sequences per rank")
    q.add_argument("--seq", type=int, default=DEFAULT_SEQ, help="tokens per sequence (training), prompt length (generate)")
    gpu_args(q)
    q.add_argument("--gpu-gb", type=float, help=argparse.SUPPRESS)  # gone: a one-line pointer to --gpu / --gpu-gib
    q.add_argument("--checkpointing", action="store_true", help="activation checkpointing of every decoder layer (train)")
    q.add_argument("--min-n", action="store_true", help="find the smallest N whose per-rank peak fits --gpu / --gpu-gib")
    q.add_argument("--json", action="store_true", help="print one JSON object")


def fit_args(q) -> None:
    model_args(q)
    gpu_args(q)
    # --mode lora: LoRA runs are another branch's MemorySpec fields; not in this one yet (README)
    setting_args(q, batch=None, seq=None, modes=("train", "lora", "generate"),
                 mode_help="train: one optimizer step; lora: a step of peft's LoRA (--lora-*, --quant); generate: prefill + decode")
    q.add_argument("--world-size", type=int, help="N data-parallel ranks: answer per rank under --strategy (FSDP2 on a "
                                                  "fake process group)")
    q.add_argument("--strategy", choices=("ddp", "fsdp", "zero2", "zero3"),
                   help="sharded training; without --world-size: find the fewest GPUs for --batch and --seq per rank "
                        "(default strategy with --world-size: fsdp)")
    q.add_argument("--plot", metavar="FILE", help="draw the measured peaks against the searched value, with the GPU's line (PNG)")
    q.add_argument("--json", action="store_true", help="print one JSON object (max_batch, max_seq or min_gpus, "
                                                       "usable_bytes, peak_bytes_at_max, peak_bytes_above)")


def ledger_args(q, name: str) -> None:
    q.add_argument("--backend", choices=("meta", "fake", "cuda", "auto"), default="auto",
                   help="meta: counts only; fake: CPU fake-tensor memory; cuda: real GPU; auto: cuda if present, else fake")
    q.add_argument("--only", help="comma-separated claim ids, e.g. P1,P7,T3")
    q.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    if name == "claims":
        q.add_argument("--json", action="store_true", help="print the claims as JSON")
        q.add_argument("--jsonl", help="append each result to this file as it comes; reuse what it holds")
    else:
        q.add_argument("--out", help="output folder (default: reports/<hardware>)")
        q.add_argument("--fresh", action="store_true", help="ignore results a previous run left in the folder")


def external_args(q) -> None:
    q.add_argument("--only", help="comma-separated figure ids (verify/external.py)")
    q.add_argument("--out", help="output folder (default: reports/external)")
    q.add_argument("--json", action="store_true", help="print the rows as JSON")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m verify", description="Check transformer parameter and memory claims against real modules.")
    sub = p.add_subparsers(dest="command", required=True)
    for name, help_, add, func in (
        ("params", "exact parameter counts by introspection, beside the seed formulas", params_args, cmd_params),
        ("memory", "memory of a training step or of generation, by category", memory_args, cmd_memory),
        ("fit", "will it fit on a GPU: the largest batch or sequence, the fewest GPUs, or a verdict", fit_args, cmd_fit),
        ("shard", "per-rank memory under DDP / FSDP2 (ZeRO) on a fake process group", shard_args, cmd_shard),
        ("claims", "verdict on every claim of the catalogue (verify/claims/CATALOGUE.md)", lambda q: ledger_args(q, "claims"), cmd_claims),
        ("report", "write reports/<hardware>/: CLAIMS.md, claims.json, plots", lambda q: ledger_args(q, "report"), cmd_report),
        ("external", "GPU memory figures others published, reproduced on the fake backend", external_args, cmd_external),
    ):
        q = sub.add_parser(name, help=help_, description=help_, formatter_class=_Help)
        add(q)
        q.set_defaults(func=func)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

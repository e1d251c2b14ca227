"""`python -m verify COMMAND ...`: params, memory, shard, claims, report.

Bad input exits with status 2 and one line on stderr naming what is wrong and what would work.
"""

from __future__ import annotations

import argparse
import json
import sys

from verify.units import fmt_count, fmt_rel, rel_error


class UsageError(Exception):
    """Input the tool cannot use; printed as one line, exit status 2."""


def _model(name: str):
    from verify.configs import ConfigError, load_config, shape

    try:
        config = load_config(name)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    return config, shape(config)


# --- params ---------------------------------------------------------------------------------


def params_report(name: str) -> dict:
    """Count MODEL on the meta device and put the seed formulas beside the count (for a family the
    registry does not cover: the count alone, and a note saying so)."""
    from verify.build import build
    from verify.families import not_in_registry
    from verify.formulas import params as F
    from verify.measure.params import count

    config, s = _model(name)
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

    r = params_report(args.model)
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
        "totals": {k: {"predicted": v, "measured": measured.get(k), "rel_error": rel_error(v, measured.get(k))} for k, v in totals.items()},
    }


def cmd_memory(args) -> int:
    import dataclasses

    from verify.claims.memory import seed_predictions
    from verify.measure.memory import MemorySpec, validate

    _, s = _model(args.model)
    spec = MemorySpec(
        model=args.model, mode=args.mode, backend=args.backend, dtype=args.dtype, precision=args.precision,
        optimizer=args.optimizer, batch=args.batch, seq=args.seq, new_tokens=args.new_tokens, attn=args.attn,
        checkpointing=args.checkpointing, loss=args.loss, cache=args.cache,
    )
    try:
        validate(spec, s)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if spec.backend == "cuda":
        from verify.measure.cuda import measure, require_cuda

        try:
            require_cuda()
        except ValueError as e:
            raise UsageError(str(e)) from None
    elif spec.backend == "cpu":
        from verify.measure.cpu import measure
    else:
        from verify.measure.fake import measure
    # I2 compares generation with training: the other mode, same model, dtype, batch and prompt
    other = dataclasses.replace(spec, mode="generate" if spec.mode == "train" else "train", precision="pure",
                                checkpointing=False)
    import torch

    try:
        result = measure(spec)
    except torch.OutOfMemoryError:
        raise UsageError(f"{spec.model}: {spec.mode} with batch {spec.batch}, seq {spec.seq} does not fit on this GPU "
                         "(out of memory); try --backend fake") from None
    except (ValueError, RuntimeError) as e:  # TraceError, or a model transformers cannot build this way
        raise UsageError(str(e).splitlines()[0]) from None
    try:
        companion = measure(other) if args.companion else None
    except (ValueError, RuntimeError):  # the other mode may not run here (OOM on a GPU, a mode the model lacks)
        companion = None
    if s.family is None:  # no closed form: no N for the seeds' formulas, no predictor
        from verify.families import not_in_registry

        out = {**result.as_dict(), "family": None, "note": not_in_registry(s.model_type), "predictions": {},
               "corrected": {"not_covered": not_in_registry(s.model_type)}}
    else:
        out = {**result.as_dict(), "predictions": seed_predictions(s, spec, result, companion),
               "corrected": corrected_prediction(spec, result)}
    if companion is not None:
        out["companion"] = {k: v for k, v in companion.as_dict().items() if k.endswith("_bytes") or k == "spec"}
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    else:
        from verify.report import memory_table

        print(memory_table(out))
    return 0


# --- shard ----------------------------------------------------------------------------------


def cmd_shard(args) -> int:
    import math

    from verify.measure.shard import ShardSpec, measure_shard, validate_shard
    from verify.predict.shard import min_world_size
    from verify.units import GB

    _, s = _model(args.model)
    spec = ShardSpec(
        model=args.model, world_size=args.world_size, strategy=args.strategy, mode=args.mode, dtype=args.dtype,
        precision=args.precision, optimizer=args.optimizer, batch=args.batch, seq=args.seq, checkpointing=args.checkpointing,
    )
    if not (args.gpu_gb > 0 and math.isfinite(args.gpu_gb)):
        raise UsageError(f"GPU size must be a positive number of GB, got {args.gpu_gb:g}")
    try:
        validate_shard(spec, s)
    except ValueError as e:
        raise UsageError(str(e)) from None
    gpu_bytes = int(args.gpu_gb * GB)
    if args.min_n:
        result = min_world_size(spec, gpu_bytes, measure_shard, reference_n=spec.world_size)
    else:
        result = measure_shard(spec)
        peak = result["per_rank"]["peak_bytes"]
        result.update(gpu_bytes=gpu_bytes, fits=peak <= gpu_bytes, headroom_bytes=gpu_bytes - peak)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    elif args.min_n:
        from verify.units import fmt_bytes

        n = result["min_world_size"]
        how = "measured at N and N-1" if result["confirmed"] else "from the run at N=%d, not confirmed" % result["reference_n"]
        print(f"{args.model}: smallest world size whose per-rank peak fits {args.gpu_gb:g} GB: "
              + (f"{n} ({how})" if n else "none up to 1024"))
        for k, v in sorted(result["measured_peaks"].items()):
            print(f"  N={k}: measured per-rank peak {fmt_bytes(v)}")
    else:
        from verify.report import shard_table

        print(shard_table(result))
    return 0


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


# --- parser ---------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    from verify.measure.memory import ATTNS, CACHES, DTYPE_NAMES, LOSSES, MODES, OPTIMIZERS, PRECISIONS

    p = argparse.ArgumentParser(prog="python -m verify", description="Check transformer parameter and memory claims against real modules.")
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser("params", help="exact parameter counts by introspection, beside the seed formulas")
    q.add_argument("model", help="bundled name (see models/) or path to a transformers config.json")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=cmd_params)

    q = sub.add_parser("memory", help="memory of a training step or of generation, by category")
    q.add_argument("model")
    q.add_argument("--mode", choices=MODES, default="train")
    q.add_argument("--backend", choices=("fake", "cpu", "cuda"), default="fake",
                   help="fake: fake tensors (any size); cpu: real CPU tensors, the CPU allocator's peak; cuda: a GPU")
    q.add_argument("--dtype", choices=DTYPE_NAMES, default="bf16")
    q.add_argument("--precision", choices=PRECISIONS, default="pure",
                   help="pure: everything in --dtype; mixed: fp32 master weights with autocast to --dtype")
    q.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    q.add_argument("--batch", type=int, default=1)
    q.add_argument("--seq", type=int, default=2048, help="training sequence length, or prompt length when generating")
    q.add_argument("--new-tokens", type=int, default=16, help="tokens to decode after the prompt (generate)")
    q.add_argument("--attn", choices=ATTNS, default="sdpa")
    q.add_argument("--cache", choices=CACHES, default="dynamic",
                   help="generate: transformers' DynamicCache, or the StaticCache generate() preallocates to S + N - 1 positions")
    q.add_argument("--checkpointing", action="store_true", help="activation checkpointing of every decoder layer")
    q.add_argument("--loss", choices=LOSSES, default="ce",
                   help="ce: the model's cross-entropy (labels = inputs); sum: logits.sum(), as some benchmarks do (train)")
    q.add_argument("--no-companion", dest="companion", action="store_false",
                   help="skip the run of the other mode (same model, dtype, batch, seq) that claim I2 compares with")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_memory)

    q = sub.add_parser("shard", help="per-rank memory under DDP / FSDP2 (ZeRO) on a fake process group")
    q.add_argument("model")
    q.add_argument("--world-size", type=int, required=True, help="N ranks (with --min-n: the N measured first)")
    q.add_argument("--strategy", default="fsdp", help="ddp | fsdp | zero2 | zero3")
    q.add_argument("--mode", default="train", help="train (one optimizer step) | infer (prefill of a --seq token prompt)")
    q.add_argument("--dtype", choices=DTYPE_NAMES, default="bf16")
    q.add_argument("--precision", default="mixed", help="mixed: fp32 sharded master weights, compute in --dtype | pure")
    q.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    q.add_argument("--batch", type=int, default=1, help="sequences per rank")
    q.add_argument("--seq", type=int, default=2048)
    q.add_argument("--gpu-gb", type=float, default=80.0, help="GPU memory in GB (1e9 bytes) to fit")
    q.add_argument("--checkpointing", action="store_true", help="activation checkpointing of every decoder layer (train)")
    q.add_argument("--min-n", action="store_true", help="find the smallest N whose per-rank peak fits --gpu-gb")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_shard)

    for name, help_ in (("claims", "verdict on every claim of the catalogue (verify/claims/CATALOGUE.md)"), ("report", "write reports/<hardware>/: CLAIMS.md, claims.json, plots")):
        q = sub.add_parser(name, help=help_)
        q.add_argument("--backend", choices=("meta", "fake", "cuda", "auto"), default="auto",
                       help="meta: counts only; fake: CPU fake-tensor memory; cuda: real GPU; auto: cuda if present, else fake")
        q.add_argument("--only", help="comma-separated claim ids, e.g. P1,P7,T3")
        q.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
        if name == "claims":
            q.add_argument("--json", action="store_true")
            q.add_argument("--jsonl", help="append each result to this file as it comes; reuse what it holds")
            q.set_defaults(func=cmd_claims)
        else:
            q.add_argument("--out", help="output folder (default reports/<hardware>)")
            q.add_argument("--fresh", action="store_true", help="ignore results a previous run left in the folder")
            q.set_defaults(func=cmd_report)
    q = sub.add_parser("external", help="GPU memory figures others published, reproduced on the fake backend")
    q.add_argument("--only", help="comma-separated figure ids (verify/external.py)")
    q.add_argument("--out", help="output folder (default reports/external)")
    q.add_argument("--json", action="store_true", help="print the rows as JSON")
    q.set_defaults(func=cmd_external)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

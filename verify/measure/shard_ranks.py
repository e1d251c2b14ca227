"""Real ranks: the per-rank measurement of verify.measure.shard on a real process group.

    torchrun --nproc-per-node 1 -m verify.measure.shard_ranks MODEL --strategy zero3 --device cuda --out ranks.json

Each rank runs `run_rank` (the very function the fake backend runs) on real tensors: NCCL and
the rank's GPU with --device cuda, gloo and the CPU with --device cpu; the optimizer steps the
DTensors themselves (the fake backend's LocalShardStep shortcut is not used here). Rank 0 writes one JSON
object: the spec, its per-rank bytes (the tracker's figures, as on the fake backend) and, on CUDA,
`cuda_peak_bytes` = torch.cuda.max_memory_allocated during the step less what was allocated
before it was built. Compare with `python -m verify shard MODEL --world-size N ... --json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from verify.measure.memory import DTYPE_NAMES, OPTIMIZERS, PRECISIONS
from verify.units import DEFAULT_PRECISION
from verify.measure.shard import MODES, STRATEGIES, ShardSpec, run_rank, validate_shard


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="torchrun ... -m verify.measure.shard_ranks")
    p.add_argument("model")
    p.add_argument("--strategy", choices=STRATEGIES, default="fsdp")
    p.add_argument("--mode", choices=MODES, default="train")
    p.add_argument("--dtype", choices=DTYPE_NAMES, default="bf16")
    p.add_argument("--precision", choices=PRECISIONS, default=DEFAULT_PRECISION)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--checkpointing", action="store_true")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--out", help="JSON file rank 0 writes (default: stdout)")
    args = p.parse_args(argv)
    if "RANK" not in os.environ:
        print("error: run under torchrun (RANK and WORLD_SIZE are not set), e.g. "
              "torchrun --nproc-per-node 1 -m verify.measure.shard_ranks tiny-llama", file=sys.stderr)
        return 2

    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from verify.configs import load_config, shape

    if args.device == "cuda":
        if not torch.cuda.is_available():
            print("error: --device cuda needs a CUDA GPU and none is visible; use --device cpu (gloo)", file=sys.stderr)
            return 2
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    try:
        world = dist.get_world_size()
        spec = ShardSpec(model=args.model, world_size=world, strategy=args.strategy, mode=args.mode, dtype=args.dtype,
                         precision=args.precision, optimizer=args.optimizer, batch=args.batch, seq=args.seq,
                         checkpointing=args.checkpointing)
        try:
            validate_shard(spec, shape(load_config(args.model)))
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        mesh = init_device_mesh(args.device, (world,), mesh_dim_names=("dp",))
        if args.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        result = run_rank(spec, mesh, args.device)
        if args.device == "cuda":
            torch.cuda.synchronize()
            result["per_rank"]["cuda_peak_bytes"] = torch.cuda.max_memory_allocated() - base
            result["device_name"] = torch.cuda.get_device_name()
        result.update(backend=f"{args.device} ({dist.get_backend()}), {world} real rank(s)", rank=dist.get_rank())
        if dist.get_rank() == 0:
            text = json.dumps(result, indent=2, default=str)
            if args.out:
                Path(args.out).write_text(text)
            else:
                print(text)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a memory measurement is asked (MemorySpec) and what every backend returns (MemoryResult).

The fake backend (fake.py), the cpu backend (cpu.py: real CPU tensors, the CPU allocator's own
figures) and the CUDA backend (cuda.py) take the same spec and return the same result, so they
compare run by run. One category enum, as in torch's mem_tracker.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field

from verify.formulas.cuda import ARCHS
from verify.units import DEFAULT_PRECISION, DTYPE_NAMES, PRECISIONS

MODES = ("train", "generate", "forward", "lora")
OPTIMIZERS = ("adamw", "adam", "sgd", "none")  # every backend, sharded runs (verify shard) included
MEMORY_OPTIMIZERS = OPTIMIZERS + ("adamw-fused", "adamw-8bit", "adafactor", "sgd-momentum")  # single-device runs
QUANTS = ("none", "int8", "nf4", "nf4-nodq", "fp4")  # the frozen base of --mode lora, or the weights of --mode generate /
# forward: as built, or bitsandbytes int8 / NF4 / FP4 (quant.BNB_QUANTS)
LOSSES = ("ce", "sum")
ATTNS = ("eager", "sdpa", "flash")
BACKENDS = ("fake", "cpu", "cuda")
CACHES = ("dynamic", "static")  # transformers' DynamicCache (grows by one position a step) or StaticCache (preallocated)


class Category(enum.Enum):
    """Where a byte of device memory goes."""

    PARAMS = "params"  # the model's weights (and fp32 master copies under mixed precision)
    BUFFERS = "buffers"  # module buffers (RoPE inv_freq, masks): not parameters, still memory
    GRADS = "grads"  # .grad of each parameter
    OPTIMIZER = "optimizer"  # persistent optimizer state (Adam m and v, step counters)
    ACTIVATIONS = "activations"  # tensors saved by forward for backward, logits, loss, inputs
    KV_CACHE = "kv_cache"  # key/value tensors held by the generation cache
    TRANSIENT = "transient"  # freed within the step: foreach temporaries, workspace, recompute


@dataclass(frozen=True)
class MemorySpec:
    """One run to measure."""

    model: str  # bundled name or config.json path
    mode: str = "train"  # "train": forward, loss, backward, optimizer step; "generate": prefill + decode;
    # "forward": one forward under torch.no_grad() without a cache, every position's logits kept;
    # "lora": the training step of peft's LoRA: frozen base in dtype (or quantized), fp32 adapters trained
    backend: str = "fake"  # "fake" (FakeTensorMode on CPU), "cpu" (real CPU tensors, the CPU allocator's peak) or "cuda"
    dtype: str = "bf16"  # weight dtype; under precision="mixed" the autocast dtype (weights stay fp32; a LoRA
    # base stays in dtype: frozen weights need no master copy)
    precision: str = DEFAULT_PRECISION  # "pure": everything in dtype; "mixed": fp32 master weights + autocast(dtype)
    optimizer: str = "adamw"  # adamw | adam | sgd (plain SGD: no state) | none (forward and backward only) |
    # adamw-fused | adamw-8bit (bitsandbytes) | adafactor (torch.optim) | sgd-momentum (0.9): MEMORY_OPTIMIZERS
    loss: str = "ce"  # "ce": the model's own cross-entropy (labels = inputs); "sum": logits.sum(), as some benchmarks do
    batch: int = 1  # B
    seq: int = 2048  # S: training sequence length, or the prompt length when generating
    new_tokens: int = 0  # tokens decoded after the prompt (generate mode)
    attn: str | None = None  # "eager" (materializes a x S x S scores), "sdpa", "flash" (flash-attn 2, emulated), or None:
    # what transformers picks for the architecture (sdpa where the model class supports it, else eager; attention_used says which)
    checkpointing: bool = False  # activation checkpointing of every decoder layer
    gpu_terms: bool = True  # when the backend is fake, add the modelled CUDA terms (verify/formulas/cuda.py) to the peak
    gpu_arch: str = "sm90"  # the GPU architecture those terms model (verify.formulas.cuda.ARCHS; `--gpu NAME` sets its card's)
    lora_rank: int = 8  # r of every LoRA adapter (mode "lora")
    lora_targets: str = ""  # mode "lora": "" = peft's default target modules for the model type, "all-linear",
    # or comma-separated module names (q_proj,v_proj)
    quant: str = "none"  # modes "lora" (the frozen base), "generate" and "forward" (the weights): as built (none) or
    # quantized by bitsandbytes: int8 | nf4 (NF4 with double quantization, as QLoRA) | nf4-nodq (NF4, fp32 absmax) |
    # fp4 (load_in_4bit=True as transformers defaults it: FP4, fp32 absmax, compute in fp32)
    cache: str = "dynamic"  # generate mode: "dynamic" (DynamicCache, S + t positions at step t) or "static"
    # (StaticCache that generate() preallocates to S + N - 1 positions)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class MemoryResult:
    """Bytes of one run, ints. Persistent categories are exact; activations and peak are measured."""

    spec: dict  # the MemorySpec, as a dict
    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int  # persistent optimizer state only
    activations_bytes: int  # train: live at the forward/backward boundary beyond the persistent state (saved
    # tensors, log-probs, ids, labels); generate: what the peak holds beyond the weights and the final KV cache
    kv_cache_bytes: int
    transient_bytes: int  # at the peak: bytes allocated outside the forward and not persistent (backward
    # temporaries, foreach optimizer temporaries, recompute under checkpointing, workspace)
    peak_bytes: int  # highest total allocation seen during the measured step (fake with gpu_terms: trace + CUDA terms)
    phases: dict[str, int] = field(default_factory=dict)  # phase name -> peak bytes in that phase
    extra: dict = field(default_factory=dict)  # backend-specific: CUDA context, reserved, timings
    buffers_bytes: int = 0  # module buffers (RoPE inv_freq, masks): memory, but not parameters
    at_peak: dict[str, int] = field(default_factory=dict)  # category -> bytes live at the peak; sums to peak_bytes
    peak_phase: str = ""  # the phase the peak happened in (forward, backward, optimizer, prefill, decode)
    snapshots: dict[str, dict[str, int]] = field(default_factory=dict)  # "forward_end", "steady" -> category bytes then
    # (fake with gpu_terms: forward_end also has "cuda_terms", the modelled GPU's bytes beyond the trace then)
    traced_peak_bytes: int = 0  # the peak of the traced tensors alone (the tracker's figure, on every backend)
    cuda_terms: dict[str, int] = field(default_factory=dict)  # fake with gpu_terms: what a GPU adds at the peak moment,
    # term -> bytes, summing to peak_bytes - traced_peak_bytes; empty where the GPU itself is measured or gpu_terms is off
    trainable_params: int = 0  # parameters the optimizer updates (train: all; lora: the adapters; else 0)

    def as_dict(self) -> dict:
        return asdict(self)


def common_checks(spec, optimizers: tuple[str, ...] = OPTIMIZERS) -> list[tuple[bool, str]]:
    """(ok, message) checks of the fields MemorySpec and ShardSpec share: dtype, precision,
    optimizer (one of `optimizers`), batch, seq."""
    return [
        (spec.dtype in DTYPE_NAMES, f"dtype {spec.dtype!r} is not one of {', '.join(DTYPE_NAMES)}"),
        (spec.precision in PRECISIONS, f"precision {spec.precision!r} is not one of {', '.join(PRECISIONS)}"),
        (spec.optimizer in optimizers, f"optimizer {spec.optimizer!r} is not one of {', '.join(optimizers)}"),
        (spec.batch > 0, f"batch must be positive, got {spec.batch}"),
        (spec.seq > 0, f"seq must be positive, got {spec.seq}"),
    ]


def raise_first(checks: list[tuple[bool, str]]) -> None:
    """Raise ValueError with the message of the first failed (ok, message) check."""
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def validate(spec: MemorySpec, shape) -> None:
    """Raise ValueError with one clear line for a spec that cannot or should not run."""
    checks = [
        (spec.mode in MODES, f"mode {spec.mode!r} is not one of {', '.join(MODES)}"),
        (spec.backend in BACKENDS, f"backend {spec.backend!r} is not one of {', '.join(BACKENDS)}"),
        *common_checks(spec, MEMORY_OPTIMIZERS),
        (spec.attn is None or spec.attn in ATTNS, f"attention {spec.attn!r} is not one of {', '.join(ATTNS)}"),
        (spec.new_tokens >= 0, f"new-tokens must be zero or positive, got {spec.new_tokens}"),
        (spec.loss in LOSSES, f"loss {spec.loss!r} is not one of {', '.join(LOSSES)}"),
        (spec.gpu_arch in ARCHS, f"GPU architecture {spec.gpu_arch!r} is not one of {', '.join(ARCHS)}"),
        (spec.cache in CACHES, f"cache {spec.cache!r} is not one of {', '.join(CACHES)}"),
        (spec.cache == "dynamic" or spec.mode == "generate", "--cache static applies to generation only (--mode generate)"),
        (
            not (spec.precision == "mixed" and spec.dtype == "fp32"),
            "precision 'mixed' keeps fp32 master weights and computes in --dtype fp16 or bf16; "
            "--dtype fp32 with mixed makes no sense (use --precision pure for fp32)",
        ),
        (
            not (spec.mode not in ("train", "lora") and (spec.checkpointing or spec.precision == "mixed")),
            "--checkpointing and --precision mixed apply to training only (--mode train or lora)",
        ),
        (spec.quant in QUANTS, f"quant {spec.quant!r} is not one of {', '.join(QUANTS)}"),
        (spec.lora_rank > 0, f"lora-rank must be positive, got {spec.lora_rank}"),
        (
            spec.mode == "lora" or (spec.lora_rank == 8 and not spec.lora_targets),
            "--lora-rank and --lora-targets apply to --mode lora",
        ),
        (
            spec.mode != "train" or spec.quant == "none",
            "--quant applies to --mode lora (a quantized frozen base), generate and forward (quantized weights); "
            "bitsandbytes weights are not trained in full",
        ),
    ]
    raise_first(checks)
    total = spec.seq + (spec.new_tokens if spec.mode == "generate" else 0)
    if shape.max_positions and total > shape.max_positions:
        raise ValueError(
            f"{shape.name} accepts at most {shape.max_positions} positions; "
            f"seq {spec.seq}" + (f" + new-tokens {spec.new_tokens}" if spec.mode == "generate" else "") + f" = {total}"
        )


def attention_used(spec: MemorySpec, config=None) -> str:
    """The attention implementation a run of `spec` builds: spec.attn if set, else the one
    transformers picks for the architecture, read back from a meta build's
    config._attn_implementation (no memory; about a second for an 8B model)."""
    if spec.attn is not None:
        return spec.attn
    from verify.build import build
    from verify.configs import load_config

    model = build(config if config is not None else load_config(spec.model), device="meta")
    return model.config._attn_implementation


def measure(spec: MemorySpec, config=None) -> MemoryResult:
    """`spec` measured on the backend it names: "fake" (FakeTensorMode on the CPU), "cpu" (real CPU
    tensors, the CPU allocator's peak) or "cuda" (a GPU). `config`: a transformers config to build
    instead of loading `spec.model` (a bundled model with some fields changed)."""
    if spec.backend == "cuda":
        from verify.measure.cuda import measure as on_cuda

        return on_cuda(spec, config=config)
    if spec.backend == "cpu":
        from verify.measure.cpu import measure as on_cpu

        return on_cpu(spec, config=config)
    from verify.measure.fake import run

    return run(spec, device="fake", config=config)

"""LoRA measured with peft (L1-L3): the seed's 1024×2048 layer, the modules peft wraps on real
architectures, and a training step of LoRA against full fine-tuning (time and state bytes)."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn


def peft_lora(model: nn.Module, config) -> nn.Module:
    """peft's get_peft_model, without the FutureWarning transformers raises inside it, peft's note
    that it switches fan_in_fan_out on for GPT-2's Conv1D, its note on Mixtral's unused patterns,
    and the note bitsandbytes (which peft imports) logs about an optional CPU kernels package."""
    import warnings

    from verify.measure.quant import bitsandbytes

    bitsandbytes()
    from peft import get_peft_model

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message="fan_in_fan_out is set to False")
        warnings.filterwarnings("ignore", message="The following .*_pattern keys did not match any targeted module")
        return get_peft_model(model, config)


class SeedLayer(nn.Module):
    """The seed's frozen weight W (1024×2048: input 1024, output 2048) as one bias-free Linear."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.W = nn.Linear(d_in, d_out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.W(x)


@dataclass(frozen=True)
class SeedLoraSpec:
    """L1: the seed's layer and rank."""

    d_in: int = 1024  # rows of W and of A (the seed's 1024)
    d_out: int = 2048  # columns of W and of B (the seed's 2048)
    r: int = 32  # LoRA rank (the seed's 32)
    alpha: int = 32  # peft's lora_alpha; scaling α/r = 1 makes ΔW = A@B as the seed writes it
    batch: int = 8  # input rows for the output comparison
    seed: int = 0  # torch seed


def seed_layer(spec: SeedLoraSpec = SeedLoraSpec()) -> dict:
    """L1 on the seed's layer: peft's trainable parameters and their shapes, whether W is frozen,
    output = x@W + (α/r)·x@A@B, merged (W + ΔW) vs unmerged outputs, and what one optimizer step
    changes."""
    from peft import LoraConfig

    torch.manual_seed(spec.seed)
    base = SeedLayer(spec.d_in, spec.d_out)
    W = base.W.weight.detach().clone()  # (d_out, d_in): nn.Linear stores W transposed
    # init_lora_weights=False: B random too, so ΔW ≠ 0 and the merge is a real test
    model = peft_lora(base, LoraConfig(r=spec.r, lora_alpha=spec.alpha, target_modules=["W"], init_lora_weights=False))
    layer = model.base_model.model.W
    A = layer.lora_A["default"].weight  # (r, d_in): the seed's A (d_in × r) transposed
    B = layer.lora_B["default"].weight  # (d_out, r): the seed's B (r × d_out) transposed
    scaling = layer.scaling["default"]
    trainable = {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}
    x = torch.randn(spec.batch, spec.d_in)
    with torch.no_grad():
        y = model(x)
        by_seed = x @ W.T + scaling * (x @ A.T @ B.T)  # input @ W + input @ A @ B, seed orientation
    # one AdamW step on a dummy loss: which tensors move
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    A0, B0 = A.detach().clone(), B.detach().clone()
    model(x).square().mean().backward()
    opt.step()
    W_after = layer.base_layer.weight.detach().clone()
    moved = {"A changed": not torch.equal(A0, A.detach()), "B changed": not torch.equal(B0, B.detach())}
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    with torch.no_grad():
        y_unmerged = model(x)
        delta_seed = scaling * (A.detach().T @ B.detach().T)  # ΔW = A@B in the seed's d_in × d_out orientation
        merged = model.merge_and_unload()  # writes W + ΔW into the base layer
        y_merged = merged(x)
        W_merged = merged.W.weight.detach().T
    return {
        "trainable": n_trainable,
        "trainable_shapes": trainable,
        "frozen": n_frozen,
        "W_shape (d_in x d_out)": (spec.d_in, spec.d_out),
        "scaling α/r": scaling,
        "max |y - (xW + s·xAB)|": float((y - by_seed).abs().max()),
        "W unchanged by the step": torch.equal(W_after, W),
        **moved,
        "max |W' - (W + s·A@B)|": float((W_merged - (W.T + delta_seed)).abs().max()),
        "max |merged - unmerged output|": float((y_merged - y_unmerged).abs().max()),
        "max |unmerged output|": float(y_unmerged.abs().max()),
    }


def wrapped_modules(model_name: str, target_modules: str | list[str] | None = None, device: str = "cpu",
                    r: int = 4) -> dict:
    """L2: the modules peft's LoRA (rank r) wraps on a bundled architecture: None = peft's default
    for the model type, "all-linear" = every linear layer peft selects; their base classes, the
    (d_in, d_out) of the wrapped nn.Linear layers, lm_head, trainable counts. device "meta" does
    full-size models without memory."""
    from peft import LoraConfig
    from peft.tuners.lora import LoraLayer
    from peft.utils.error import NoMatchingPeftModuleError

    from verify.build import build
    from verify.configs import load_config

    torch.manual_seed(0)
    model = build(load_config(model_name), device=device)
    linear_like = {n for n, m in model.named_modules() if type(m).__name__ in ("Linear", "Conv1D")}
    try:
        peft_model = peft_lora(model, LoraConfig(r=r, target_modules=target_modules))
    except NoMatchingPeftModuleError as e:
        return {"model": model_name, "target_modules": target_modules or "peft default", "wrapped": 0, "error": str(e)}
    layers = {n.removeprefix("base_model.model."): m.base_layer for n, m in peft_model.named_modules() if isinstance(m, LoraLayer)}
    wrapped = {n: type(b).__name__ for n, b in layers.items()}
    leaf = sorted({n.rsplit(".", 1)[-1] for n in wrapped})
    return {
        "model": model_name,
        "target_modules": target_modules or "peft default",
        "wrapped": len(wrapped),
        "wrapped_names": leaf,
        "base_classes": sorted(set(wrapped.values())),
        "linear_dims": [(b.in_features, b.out_features) for b in layers.values() if isinstance(b, nn.Linear)],
        "linear_layers": len(linear_like),
        "lm_head_wrapped": any(n.endswith("lm_head") for n in wrapped),
        "embedding_wrapped": any("emb" in n or n.endswith("wte") for n in wrapped),
        "trainable": sum(p.numel() for p in peft_model.parameters() if p.requires_grad),
        "total": sum(p.numel() for p in peft_model.parameters()),
    }


@dataclass(frozen=True)
class StepSpec:
    """L3: a training step of LoRA against full fine-tuning on the same model and batch."""

    model: str = "tiny-llama"  # bundled config the model is built from
    overrides: tuple[tuple[str, int], ...] = (  # config fields changed so matmuls, not overhead, dominate
        ("hidden_size", 256), ("intermediate_size", 688), ("num_hidden_layers", 4), ("vocab_size", 4096),
        ("num_attention_heads", 8), ("num_key_value_heads", 8),
    )
    batch: int = 4  # sequences per step
    seq: int = 64  # tokens per sequence
    r: int = 8  # LoRA rank
    target_modules: str = "all-linear"  # peft's selection: every linear layer but the output head
    warmup: int = 2  # untimed steps of each mode first
    steps: int = 5  # timed steps of each mode, alternating; the fastest is reported
    device: str = "cpu"  # cpu | cuda
    threads: int = 1  # CPU threads while timing: one keeps timings steady on cores other processes share
    seed: int = 0  # torch seed


@dataclass
class StepResult:
    """One mode's training step."""

    mode: str  # "full" | "lora"
    trainable: int  # parameters with requires_grad
    trainable_tensors: int  # parameter tensors with requires_grad (AdamW keeps a step counter for each)
    total: int  # all parameters
    param_bytes: int  # storage of every parameter
    grad_bytes: int  # storage of the gradients after backward
    optimizer_bytes: int  # storage of AdamW's state after a step
    step_seconds: float  # fastest timed forward + backward + optimizer step (least disturbed by other load)
    median_seconds: float  # median of the timed steps
    step_times: list[float]  # every timed step, seconds
    flops: int  # matmul FLOPs of one forward + backward (torch's FlopCounterMode); deterministic

    def as_dict(self) -> dict:
        return asdict(self)


def _tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


class _Trainer:
    """A model (full or LoRA), its AdamW and one batch of random tokens: `step()` trains once."""

    def __init__(self, spec: StepSpec, mode: str):
        from peft import LoraConfig

        from verify.build import build
        from verify.configs import load_config

        if mode not in ("full", "lora"):
            raise ValueError(f"unknown mode {mode!r}; choose full or lora")
        config = load_config(spec.model)
        for key, value in spec.overrides:
            setattr(config, key, value)
        torch.manual_seed(spec.seed)
        model = build(config, device=spec.device)
        if mode == "lora":
            model = peft_lora(model, LoraConfig(r=spec.r, target_modules=spec.target_modules))
        self.mode, self.model, self.cuda = mode, model.train(), spec.device == "cuda"
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(self.params, lr=1e-4)
        self.ids = torch.randint(0, config.vocab_size, (spec.batch, spec.seq), device=spec.device)
        self.times: list[float] = []

    def step(self, timed: bool = True) -> None:
        start = time.perf_counter()
        self.model(input_ids=self.ids, labels=self.ids).loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=False)
        if self.cuda:
            torch.cuda.synchronize()
        if timed:
            self.times.append(time.perf_counter() - start)

    def flops(self) -> int:
        """FLOPs of one forward + backward as torch.utils.flop_counter counts them (matmuls and
        attention; the optimizer's elementwise work is not counted). Gradients are cleared after."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            self.model(input_ids=self.ids, labels=self.ids).loss.backward()
        self.opt.zero_grad(set_to_none=False)
        return counter.get_total_flops()

    def result(self) -> StepResult:
        return StepResult(
            mode=self.mode,
            trainable=sum(p.numel() for p in self.params),
            trainable_tensors=len(self.params),
            total=sum(p.numel() for p in self.model.parameters()),
            param_bytes=_tensor_bytes(self.model.parameters()),
            grad_bytes=_tensor_bytes(p.grad for p in self.params),
            optimizer_bytes=sum(_tensor_bytes(s.values()) for s in self.opt.state.values()),
            step_seconds=min(self.times),
            median_seconds=statistics.median(self.times),
            step_times=list(self.times),
            flops=self.flops(),
        )


def lora_vs_full(spec: StepSpec = StepSpec()) -> dict:
    """L3: the same model trained full and with LoRA; the timed steps alternate between the two
    so that load from other processes falls on both alike. Ratios are full / LoRA."""
    full, lora = _Trainer(spec, "full"), _Trainer(spec, "lora")
    threads = torch.get_num_threads()
    torch.set_num_threads(spec.threads)
    try:
        for _ in range(spec.warmup):
            full.step(timed=False)
            lora.step(timed=False)
        for _ in range(spec.steps):
            full.step()
            lora.step()
        f, lo = full.result(), lora.result()
    finally:
        torch.set_num_threads(threads)
    state = lambda r: r.param_bytes + r.grad_bytes + r.optimizer_bytes  # noqa: E731
    return {
        "full": f.as_dict(),
        "lora": lo.as_dict(),
        "speedup (full/lora step time)": f.step_seconds / lo.step_seconds,
        "FLOPs full/lora": f.flops / lo.flops,
        "state bytes full/lora": state(f) / state(lo),
        "trainable fraction": lo.trainable / f.trainable,
    }

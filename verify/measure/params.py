"""Parameter counts by introspection of a built module (any device; meta costs nothing).

Every tensor is counted once: tied weights are one Parameter object shared by two modules,
and `named_parameters()` yields it once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

COMPONENTS = ("embedding", "positions", "embedding_projections", "attention", "mlp", "experts", "router", "norms",
              "output_head", "other")
# MLP projections named outside an `mlp` module (OPT's fc1/fc2 sit in the decoder layer itself)
MLP_PROJECTIONS = {"fc1", "fc2", "fc_in", "fc_out", "c_fc", "dense_h_to_4h", "dense_4h_to_h", "gate_proj", "up_proj",
                   "down_proj"}
KINDS = ("matrix", "bias", "norm_scale", "norm_shift")


@dataclass
class ParamCount:
    """What the module holds, in parameters (elements), never bytes."""

    total: int  # every distinct parameter tensor once
    trainable: int  # those with requires_grad
    by_component: dict[str, int] = field(default_factory=dict)  # COMPONENTS -> count
    by_kind: dict[str, int] = field(default_factory=dict)  # KINDS -> count
    per_layer: int = 0  # parameters of one decoder block (block 0)
    tied: list[tuple[str, str]] = field(default_factory=list)  # (name, also-known-as) pairs counted once
    buffers: int = 0  # elements of buffers (e.g. RoPE inv_freq): not parameters, listed apart
    bytes: int = 0  # storage of the parameters in their dtype

    def as_dict(self) -> dict:
        return {
            "total": self.total,
            "trainable": self.trainable,
            "by_component": dict(self.by_component),
            "by_kind": dict(self.by_kind),
            "per_layer": self.per_layer,
            "tied": [list(t) for t in self.tied],
            "buffers": self.buffers,
            "bytes": self.bytes,
        }


def _is_norm(module: nn.Module) -> bool:
    return "norm" in type(module).__name__.lower() or isinstance(module, (nn.LayerNorm, nn.GroupNorm))


def component(path: str, module: nn.Module) -> str:
    """Which part of the transformer a module belongs to, from its class and its path."""
    p = path.lower()
    last = p.rsplit(".", 1)[-1]
    if _is_norm(module):
        return "norms"
    if last in {"lm_head", "embed_out", "output"}:
        return "output_head"
    if last in {"project_in", "project_out"}:  # OPT: between the embedding width and h
        return "embedding_projections"
    if isinstance(module, nn.Embedding):
        return "positions" if ("pos" in last or last == "wpe") else "embedding"
    if "experts" in p:
        return "experts"
    if last in {"gate", "router"} and ("moe" in p or "mlp" in p):
        return "router"
    if "attn" in p or "attention" in p:
        return "attention"
    if "mlp" in p or "feed_forward" in p or "ffn" in p or last in MLP_PROJECTIONS:
        return "mlp"
    return "other"


def kind(param_name: str, param: torch.Tensor, module: nn.Module) -> str:
    if _is_norm(module):
        return "norm_shift" if param_name == "bias" else "norm_scale"
    if param_name == "bias" or param.dim() == 1:
        return "bias"
    return "matrix"


def _decoder_block(model: nn.Module) -> nn.Module | None:
    for m in model.modules():
        if isinstance(m, nn.ModuleList) and len(m) > 0:
            return m[0]
    return None


def count(model: nn.Module) -> ParamCount:
    """Count the parameters of `model` by component and kind; tied tensors once."""
    by_component = dict.fromkeys(COMPONENTS, 0)
    by_kind = dict.fromkeys(KINDS, 0)
    first_name: dict[int, str] = {}
    tied: list[tuple[str, str]] = []
    total = trainable = nbytes = 0
    for mod_path, module in model.named_modules(remove_duplicate=False):
        for pname, param in module.named_parameters(recurse=False):
            full = f"{mod_path}.{pname}" if mod_path else pname
            if id(param) in first_name:
                if first_name[id(param)] != full:
                    tied.append((first_name[id(param)], full))
                continue
            first_name[id(param)] = full
            n = param.numel()
            total += n
            nbytes += n * param.element_size()
            if param.requires_grad:
                trainable += n
            by_component[component(mod_path, module)] += n
            by_kind[kind(pname, param, module)] += n
    block = _decoder_block(model)
    per_layer = sum(p.numel() for p in block.parameters()) if block is not None else 0
    buffers = sum(b.numel() for b in model.buffers())
    return ParamCount(
        total=total,
        trainable=trainable,
        by_component={k: v for k, v in by_component.items() if v},
        by_kind={k: v for k, v in by_kind.items() if v},
        per_layer=per_layer,
        tied=tied,
        buffers=buffers,
        bytes=nbytes,
    )

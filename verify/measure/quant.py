"""Real storage of quantized weights (B1, Q1): a model quantized by optimum-quanto, every tensor
of its state dict counted (packed int data, scales, zero points/shifts, activation scales).

quanto quantizes the nn.Linear layers (lm_head included unless excluded) and leaves embeddings
and norms in the model's dtype. It works on the meta device too, which gives the exact storage
of a 7B or 13B quantized model without memory; on CPU it quantizes real weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

WEIGHTS = ("int8", "int4")


@dataclass
class QuantStorage:
    """Bytes of a quantized model's state dict, split by what they hold."""

    model: str  # config name
    weights: str  # int8 | int4
    dtype: str  # the model's float dtype (scales and unquantized tensors use it)
    device: str  # meta | cpu
    quantized_params: int  # parameters of the quantized (Linear) weights
    quantized_bytes: int  # their storage: packed data + scales + shifts
    data_bytes: int  # the packed integer data alone
    scale_bytes: int  # scales, shifts (zero points), input/output scales of the quantized layers
    other_params: int  # parameters left in float (embeddings, norms, biases)
    other_bytes: int  # their storage
    total_bytes: int  # the whole state dict (tied tensors once)
    group_sizes: list[int]  # int4: the distinct numbers of values per scale/shift (quanto picks one per layer); [] for int8
    by_suffix: dict[str, int] = field(default_factory=dict)  # state-dict name suffix -> bytes

    @property
    def bytes_per_quantized_param(self) -> float:
        return self.quantized_bytes / self.quantized_params

    @property
    def bytes_per_param(self) -> float:
        return self.total_bytes / (self.quantized_params + self.other_params)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["bytes_per_quantized_param"] = self.bytes_per_quantized_param
        d["bytes_per_param"] = self.bytes_per_param
        return d


def quantize(model: torch.nn.Module, weights: str, exclude: list[str] | None = None) -> torch.nn.Module:
    """Quantize `model` in place with optimum-quanto (weights only) and freeze it."""
    from optimum.quanto import freeze, qint4, qint8
    from optimum.quanto import quantize as q

    if weights not in WEIGHTS:
        raise ValueError(f"unknown weight type {weights!r}; choose one of {', '.join(WEIGHTS)}")
    q(model, weights={"int8": qint8, "int4": qint4}[weights], exclude=exclude)
    freeze(model)
    return model


def storage(model: torch.nn.Module, name: str, weights: str, dtype: torch.dtype, device: str) -> QuantStorage:
    """Count the state dict of a quantized model. A tensor whose name contains `.weight._` belongs
    to a quantized weight; `input_scale`/`output_scale` belong to the quantized layer too."""
    from optimum.quanto import QModuleMixin

    quantized_layers = {n for n, m in model.named_modules() if isinstance(m, QModuleMixin)}
    qparams = sum(m.weight.numel() for n, m in model.named_modules() if n in quantized_layers)
    seen: set[int] = set()
    data = scales = other_b = other_p = 0
    by_suffix: dict[str, int] = {}
    groups: set[int] = set()
    for key, t in model.state_dict(keep_vars=True).items():
        ident = id(t) if t.device.type == "meta" else t.data_ptr()
        if ident in seen:  # a tied tensor appears under two names
            continue
        seen.add(ident)
        nbytes = t.numel() * t.element_size()
        layer, _, leaf = key.partition(".weight.") if ".weight." in key else key.rpartition(".")
        if layer in quantized_layers and ".weight." in key:
            suffix = "weight." + leaf
            if leaf.startswith("_data"):
                data += nbytes
            else:
                scales += nbytes
                if weights == "int4" and leaf == "_scale":
                    groups.add(model.get_submodule(layer).weight.numel() // t.numel())
        elif layer in quantized_layers and leaf in ("input_scale", "output_scale"):
            suffix = leaf
            scales += nbytes
        else:
            suffix = "float " + leaf
            other_b += nbytes
            other_p += t.numel()
        by_suffix[suffix] = by_suffix.get(suffix, 0) + nbytes
    return QuantStorage(
        model=name, weights=weights, dtype=str(dtype).removeprefix("torch."), device=device,
        quantized_params=qparams, quantized_bytes=data + scales, data_bytes=data, scale_bytes=scales,
        other_params=other_p, other_bytes=other_b, total_bytes=data + scales + other_b, group_sizes=sorted(groups),
        by_suffix=by_suffix,
    )


def quantized_storage(config, weights: str, dtype: torch.dtype = torch.bfloat16, device: str = "meta",
                      exclude_lm_head: bool = False) -> QuantStorage:
    """Build `config` (meta or cpu), quantize its weights to int8/int4 with quanto, count the storage."""
    from verify.build import build

    torch.manual_seed(0)
    model = build(config, device=device, dtype=dtype)
    quantize(model, weights, exclude=["lm_head"] if exclude_lm_head else None)
    return storage(model, str(config.name_or_path), weights, dtype, device)

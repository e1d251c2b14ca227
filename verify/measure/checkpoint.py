"""Exact safetensors file sizes (B3): the file is an 8-byte little-endian header length, a JSON
header, then the tensors' bytes. The header is rebuilt here from names, dtypes and shapes alone,
so a meta-built 7B model gets its exact file size without writing 13 GB; `written` saves real
small models with safetensors and reads the files back, which is how the rebuilt header is
confirmed byte for byte."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass

import torch

# safetensors dtype names, ranked the way its writer orders tensors (larger rank first, then by
# name): the order of its Rust Dtype enum, for the dtypes a checkpoint here holds.
ST_DTYPES = {
    torch.float64: ("F64", 16), torch.int64: ("I64", 17), torch.float32: ("F32", 15), torch.int32: ("I32", 13),
    torch.bfloat16: ("BF16", 12), torch.float16: ("F16", 11), torch.int16: ("I16", 9), torch.int8: ("I8", 5),
    torch.uint8: ("U8", 4), torch.bool: ("BOOL", 0),
}
METADATA = {"format": "pt"}  # what safetensors' save_model (and transformers' save_pretrained) writes


@dataclass(frozen=True)
class Spec:
    """One tensor as a safetensors header records it."""

    name: str  # state-dict key
    dtype: torch.dtype  # element type
    shape: tuple[int, ...]  # dimensions

    @property
    def nbytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * torch.empty((), dtype=self.dtype).element_size()


@dataclass
class FileSize:
    """A safetensors file's size by part, in bytes."""

    tensors: int  # number of tensors stored
    header_bytes: int  # JSON header, space padding included
    tensor_bytes: int  # sum of numel × element size
    total_bytes: int  # 8 + header_bytes + tensor_bytes

    def as_dict(self) -> dict:
        return asdict(self)


def specs(model: torch.nn.Module) -> list[Spec]:
    """The tensors a checkpoint stores: the state dict with each shared tensor once. Of a tied
    pair the name transformers declares tied (all_tied_weights_keys, e.g. lm_head.weight) is
    dropped, as save_pretrained does; any other sharing keeps the alphabetically first name."""
    tied_copies = set(getattr(model, "all_tied_weights_keys", None) or {})
    by_tensor: dict[int, list[str]] = {}
    tensors: dict[int, torch.Tensor] = {}
    for name, t in model.state_dict(keep_vars=True).items():
        by_tensor.setdefault(id(t), []).append(name)
        tensors[id(t)] = t
    out = []
    for k, names in by_tensor.items():
        kept = [n for n in names if n not in tied_copies] or names
        out.append(Spec(sorted(kept)[0], tensors[k].dtype, tuple(tensors[k].shape)))
    return out


def header(tensor_specs: list[Spec], metadata: dict[str, str] | None = METADATA) -> bytes:
    """The JSON header safetensors writes for these tensors: metadata first, tensors ordered by
    dtype rank (descending) then name, compact JSON, padded with spaces to a multiple of 8."""
    unknown = {s.dtype for s in tensor_specs if s.dtype not in ST_DTYPES}
    if unknown:
        raise ValueError(f"no safetensors dtype rank known for {sorted(map(str, unknown))}; known: {sorted(map(str, ST_DTYPES))}")
    ordered = sorted(tensor_specs, key=lambda s: (-ST_DTYPES[s.dtype][1], s.name))
    entries: dict[str, object] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for s in ordered:
        entries[s.name] = {"dtype": ST_DTYPES[s.dtype][0], "shape": list(s.shape), "data_offsets": [offset, offset + s.nbytes]}
        offset += s.nbytes
    raw = json.dumps(entries, separators=(",", ":"), ensure_ascii=False).encode()
    return raw + b" " * (-len(raw) % 8)


def file_size(tensor_specs: list[Spec], metadata: dict[str, str] | None = METADATA) -> FileSize:
    """B3's rule (verify.formulas.other.safetensors_file_bytes) on these tensors' rebuilt header."""
    from verify.formulas.other import safetensors_file_bytes, total

    head = len(header(tensor_specs, metadata))
    data = sum(s.nbytes for s in tensor_specs)
    return FileSize(tensors=len(tensor_specs), header_bytes=head, tensor_bytes=data,
                    total_bytes=total(safetensors_file_bytes(head, data)))


def read_header(path: str | os.PathLike) -> bytes:
    """The JSON header of a safetensors file as stored (padding included)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return f.read(n)


def written(model: torch.nn.Module, path: str | os.PathLike) -> dict:
    """Save a real (CPU) model with safetensors' save_file, as transformers' save_pretrained does
    (shared tensors once, metadata {"format": "pt"}), and compare the file with the rule: size on
    disk, predicted size, and whether the stored header equals the rebuilt one."""
    from safetensors.torch import save_file

    tensor_specs = specs(model)
    state = model.state_dict()
    save_file({s.name: state[s.name].contiguous() for s in tensor_specs}, str(path), metadata=METADATA)
    rule = file_size(tensor_specs)
    return {
        "file_bytes": os.path.getsize(path),
        "rule_bytes": rule.total_bytes,
        "header_identical": read_header(path) == header(tensor_specs),
        **{f"rule_{k}": v for k, v in rule.as_dict().items()},
    }


def with_norms_in(model: torch.nn.Module, dtype: torch.dtype) -> list[Spec]:
    """B6: the tensors of `model` with every norm layer's parameters stored as `dtype` (as a
    checkpoint that keeps norms in fp32 holds them); other tensors keep their dtype."""
    from verify.measure.params import component

    norm_names = {f"{path}.{p}" if path else p for path, m in model.named_modules() if component(path, m) == "norms"
                  for p, _ in m.named_parameters(recurse=False)}
    return [Spec(s.name, dtype, s.shape) if s.name in norm_names else s for s in specs(model)]


def shards(model: torch.nn.Module, max_shard_size: int | str) -> dict[str, FileSize]:
    """The files a sharded save (transformers' save_pretrained, max_shard_size) writes, each sized by
    the rule; the split into shards is huggingface_hub's, which works on meta tensors too. (For MoE
    models transformers 5 converts fused experts back to per-expert tensors on save, so their
    files differ from the in-memory state dict counted here; dense models are saved as they are.)"""
    from huggingface_hub import split_torch_state_dict_into_shards

    by_name = {s.name: s for s in specs(model)}
    split = split_torch_state_dict_into_shards(model.state_dict(), max_shard_size=max_shard_size)
    return {f: file_size([by_name[n] for n in names if n in by_name]) for f, names in split.filename_to_tensors.items()}

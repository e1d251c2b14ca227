"""Real storage of quantized weights (B1, Q1): a model quantized by optimum-quanto, every tensor
of its state dict counted (packed int data, scales, zero points/shifts, activation scales); and the
bitsandbytes base of a QLoRA run (int8, NF4), quantized by bitsandbytes itself (below).

quanto quantizes the nn.Linear layers (lm_head included unless excluded) and leaves embeddings
and norms in the model's dtype. It works on the meta device too, which gives the exact storage
of a 7B or 13B quantized model without memory; on CPU it quantizes real weights.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field

import torch

from verify.torchapi import TorchDispatchMode

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


# --- bitsandbytes: the frozen base of QLoRA ------------------------------------------------
#
# A LoRA run with --quant int8|nf4|nf4-nodq loads its base as transformers does with a
# BitsAndBytesConfig: every Linear layer but the output head (and tied ones) becomes a bitsandbytes
# Linear8bitLt or Linear4bit, whose weight is quantized by the library itself. On real tensors
# (cpu, cuda) transformers' own conversion op quantizes (Params4bit / Int8Params `.to(device)`); on
# fake tensors the same library methods run on a stand-in parameter (a FakeTensor cannot be wrapped
# in the Params4bit subclass), and bitsandbytes' own fake kernels (bitsandbytes/_ops.py,
# register_fake) give the packed weight and its statistics their shapes and dtypes.

BNB_QUANTS = ("int8", "nf4", "nf4-nodq", "fp4")  # LLM.int8 (threshold 6.0); NF4 with double quantization (QLoRA); NF4
# without; fp4: `load_in_4bit=True` with transformers' defaults (FP4, fp32 absmax, no double quantization, compute in fp32)
GEMM_4BIT_FUSED_MAX_M = 512  # bitsandbytes' CUDA gemm_4bit: above 512 rows every GPU dequantizes a weight of 4 Mi
# elements or more and calls F.linear (_gemm_4bit_use_custom_cuda); smaller weights may keep the fused kernel up to
# 1536 rows on some GPUs (A100), which is not modelled
GEMM_4BIT_FP32_MAX_M = 7  # fp32 input: no MMA kernel, so the fused (SIMT) kernel only below 8 rows (`dtype ==
# torch.float32 ... return M < 8` in _gemm_4bit_use_custom_cuda), the dequantize + F.linear fallback above


def bitsandbytes():
    """The bitsandbytes package, imported without its CPU backend's note that the optional
    `kernels` package is missing (it only speeds up 4-bit inference on AVX512-BF16 CPUs) and
    without LLM.int8's note, at every layer's forward, that it casts bf16 inputs to fp16."""
    import logging

    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    import bitsandbytes

    return bitsandbytes


def bnb_config(quant: str, compute_dtype: torch.dtype):
    """transformers' BitsAndBytesConfig for `quant`, with its defaults otherwise: int8 keeps the
    LLM.int8 outlier threshold 6.0 and int8 weights (no fp16 copy); nf4 and nf4-nodq store NF4 in
    uint8 with blocks of 64 and compute in `compute_dtype`; fp4 is `load_in_4bit=True` alone: FP4,
    blocks of 64, fp32 absmax, compute in fp32 (transformers' defaults)."""
    from transformers import BitsAndBytesConfig

    if quant not in BNB_QUANTS:
        raise ValueError(f"unknown bitsandbytes quantization {quant!r}; choose one of {', '.join(BNB_QUANTS)}")
    if quant == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    if quant == "fp4":
        return BitsAndBytesConfig(load_in_4bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=quant == "nf4",
                              bnb_4bit_compute_dtype=compute_dtype)


def bnb_layers(model) -> list[tuple[str, torch.nn.Module]]:
    """(name, module) of the bitsandbytes Linear4bit / Linear8bitLt layers of `model`."""
    bnb = bitsandbytes()
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt))]


def prepare_bnb(model, quant: str, compute_dtype: torch.dtype):
    """transformers' bitsandbytes quantizer prepares `model` as from_pretrained(quantization_config=...)
    does around loading: the layers to quantize become bitsandbytes modules on the meta device
    (replace_with_bnb_linear; the output head and tied weights stay, get_keys_to_not_convert) and
    the model is flagged as loaded in 4 or 8 bits (peft reads the flag to wrap the bnb layers).
    Returns the quantizer and {layer name: (weight, bias)} of the replaced layers' originals."""
    from transformers.pytorch_utils import Conv1D
    from transformers.quantizers import AutoHfQuantizer

    bitsandbytes()
    quantizer = AutoHfQuantizer.from_config(bnb_config(quant, compute_dtype), pre_quantized=False)
    before = {n: (m.weight, m.bias) for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))}
    quantizer.preprocess_model(model, device_map=None)
    quantizer._process_model_after_weight_loading(model)  # sets model.is_loaded_in_4bit / _8bit, nothing else
    return quantizer, {n: before[n] for n, _ in bnb_layers(model)}


def quantize_bnb(model, quantizer, sources: dict, dtype: torch.dtype, device: str) -> None:
    """Quantize the weights of the bitsandbytes layers of `model` (prepared by `prepare_bnb`) on
    real tensors of `device`, from the original weights in `sources`, with transformers' own
    conversion op; biases stay frozen in `dtype`."""
    op = quantizer.get_quantize_ops()
    for name, module in bnb_layers(model):
        weight, bias = sources[name]
        module.weight = op.convert({f"{name}.weight": weight.to(dtype)}, model=model)[f"{name}.weight"]
        if bias is not None:
            module.bias = torch.nn.Parameter(bias.detach().to(dtype), requires_grad=False)


def params4bit_settings(model) -> dict:
    """{Linear4bit module: the settings of its Params4bit weight} (blocksize, compress_statistics,
    quant_type, quant_storage), read while the weight is still a Params4bit: `to_empty` makes it
    a plain tensor and drops them."""
    bnb = bitsandbytes()
    return {m: dict(blocksize=m.weight.blocksize, compress_statistics=m.weight.compress_statistics,
                    quant_type=m.weight.quant_type, quant_storage=m.weight.quant_storage)
            for _, m in bnb_layers(model) if isinstance(m, bnb.nn.Linear4bit)}


def quantize_bnb_fake(model, dtype: torch.dtype, settings: dict, fake_mode) -> None:
    """The quantization of `quantize_bnb` on fake tensors, under `fake_mode`, after `to_empty`: a
    stand-in parameter of the weight's shape in `dtype` (the dtype the checkpoint is loaded in)
    carries the attributes transformers gives Params4bit (`settings`, from `params4bit_settings`)
    or Int8Params, and bitsandbytes' own `Params4bit._quantize` / `Int8Params._quantize` quantize
    it in place; biases are made frozen in `dtype`."""
    bnb = bitsandbytes()
    import bitsandbytes.functional as F

    if "dynamic" not in F.name2qmap:  # made here, outside the fake mode: bitsandbytes caches it for every later call
        F.name2qmap["dynamic"] = F.create_dynamic_map()
    with fake_mode:
        for _, module in bnb_layers(model):
            weight = torch.nn.Parameter(torch.empty(module.out_features, module.in_features, dtype=dtype), requires_grad=False)
            if isinstance(module, bnb.nn.Linear4bit):
                weight.__dict__.update(settings[module], module=module, quant_state=None, bnb_quantized=False)
                bnb.nn.Params4bit._quantize(weight, weight.device)
            else:
                weight.__dict__.update(CB=None, SCB=None, has_fp16_weights=False)
                bnb.nn.Int8Params._quantize(weight, weight.device)
            module.weight = weight
            if module.bias is not None:
                module.bias = torch.nn.Parameter(torch.empty(module.out_features, dtype=dtype), requires_grad=False)


def bnb_state_tensors(model) -> list[torch.Tensor]:
    """The tensors a bitsandbytes layer holds beside its weight parameter: for 4 bits the quant
    state's absmax, code (the 16 NF4 values) and, double-quantized, the offset and the nested
    state's absmax and 256-entry code; for int8 the per-row scales SCB."""
    bnb = bitsandbytes()
    out = []
    for _, module in bnb_layers(model):
        if isinstance(module, bnb.nn.Linear4bit):
            s = module.weight.quant_state
            out += [s.absmax, s.code]
            if s.nested:
                out += [s.offset, s.state2.absmax, s.state2.code]
        else:
            out.append(module.weight.SCB if module.weight.SCB is not None else module.state.SCB)
    return [t for t in out if isinstance(t, torch.Tensor)]


class _BnbCudaKernels(TorchDispatchMode):
    """bitsandbytes' CUDA kernels written out op by op on fake and CPU tensors (see `cuda_bnb`)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        ops = torch.ops.bitsandbytes
        if func is ops.gemm_4bit.default:
            return _gemm_4bit(func, *args, **kwargs)
        if func is ops.int8_vectorwise_quant.default:
            return _int8_vectorwise_quant(func, *args, **kwargs)
        if func is ops.int8_mixed_scaled_mm.default:
            return _int8_mixed_scaled_mm(*args, **kwargs)
        if func is ops.int8_mm_dequant.default:
            return _int8_mm_dequant(*args, **kwargs)
        return func(*args, **kwargs)


def _gemm_4bit(func, A, B, shapeB, absmax, blocksize, quant_type, bias=None, absmax_8bit=None, absmax_code=None,
               absmax_offset=None):
    """bitsandbytes/backends/cuda/ops.py, gemm_4bit: the fused kernel up to GEMM_4BIT_FUSED_MAX_M rows
    (output only; between 5 and 512 rows the GPU's heuristic may take the fallback instead), up to
    GEMM_4BIT_FP32_MAX_M rows for fp32 input, `_dequant_linear_fallback` above (its locals live until
    it returns): the weight dequantized to the input's dtype, then F.linear."""
    if A.numel() // A.shape[-1] <= (GEMM_4BIT_FP32_MAX_M if A.dtype == torch.float32 else GEMM_4BIT_FUSED_MAX_M):
        return func(A, B, shapeB, absmax, blocksize, quant_type, bias=bias, absmax_8bit=absmax_8bit,
                    absmax_code=absmax_code, absmax_offset=absmax_offset)
    ops = torch.ops.bitsandbytes
    absmax_dq = None
    if absmax_8bit is not None:
        absmax_dq = ops.dequantize_blockwise.default(absmax_8bit, absmax, absmax_code, 256, torch.float32)
        absmax = absmax_dq + absmax_offset
    B_dq = ops.dequantize_4bit.default(B, absmax, blocksize, quant_type, shapeB, A.dtype)
    out = torch.nn.functional.linear(A, B_dq, bias)
    del absmax_dq, absmax, B_dq
    return out


def _int8_vectorwise_quant(func, A, threshold=0.0):
    """bitsandbytes/backends/cuda/ops.py, int8_vectorwise_quant: with a threshold, the mask
    |A| ≥ threshold and its any() over rows live until the kernel returns; no outlier column is
    assumed (which columns hold outliers depends on the data)."""
    if threshold <= 0.0:
        return func(A, threshold)
    outliers = A.abs() >= threshold
    any_column = outliers.any(dim=0)
    out_row, row_stats, _ = func(A, 0.0)
    del outliers, any_column
    return out_row, row_stats, A.new_empty(0, dtype=torch.int64)


def _int8_mm_dequant(A, row_stats, col_stats, dtype=None, bias=None):
    """bitsandbytes/backends/cuda/ops.py, int8_mm_dequant: an fp16 result (the kernel's only
    output type), the bias added when it is not fp16, then the cast to `dtype`."""
    out = torch.ops.bitsandbytes.int8_mm_dequant.default(A, row_stats, col_stats, dtype=torch.float16,
                                                         bias=bias if bias is not None and bias.dtype == torch.float16 else None)
    if bias is not None and bias.dtype != torch.float16:
        out.add_(bias)
    return out.to(dtype or torch.float16)


def _int8_mixed_scaled_mm(A, CA, CB, SCA, SCB, outlier_cols=None, bias=None):
    """bitsandbytes/backends/default/ops.py, int8_mixed_scaled_mm (CUDA runs this default kernel)
    without outlier columns: an empty subA, the int32 product (int8_scaled_mm -> int8_linear_matmul),
    then `_int8_mm_dequant`."""
    subA = torch.empty(0, device=A.device, dtype=A.dtype)
    out_i32 = torch.ops.bitsandbytes.int8_linear_matmul.default(CA, CB)
    return _int8_mm_dequant(out_i32, SCA, SCB, dtype=A.dtype, bias=bias), subA


def _matmul_as_on_cuda(A, B, out=None, state=None, threshold=0.0, bias=None):
    """bitsandbytes.matmul as it runs on CUDA: MatMul8bitLt. (On CPU tensors in training it takes
    MatMul8bitFp, which dequantizes the weight instead of quantizing the input.)"""
    from bitsandbytes.autograd._functions import MatMul8bitLt, MatmulLtState

    state = state or MatmulLtState()
    if threshold > 0.0:
        state.threshold = threshold
    return MatMul8bitLt.apply(A, B, out, bias, state)


def as_on_cuda(model) -> None:
    """bitsandbytes' Linear4bit repacks its weight for AVX512-BF16 CPUs at its first inference
    forward on CPU tensors (`_convert_weight_packed_for_cpu`, nn/modules.py); a GPU keeps the packed
    uint8 weight and its quant state as quantized. Off the GPU, keep them so (a run that models CUDA)."""
    bnb = bitsandbytes()
    for _, module in bnb_layers(model):
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


@contextlib.contextmanager
def cuda_bnb():
    """Inside the block, bitsandbytes on fake and CPU tensors allocates what it allocates on CUDA,
    where its kernels' own buffers are tensors the tracker would not see and its CPU paths differ:

    - the 4-bit forward (gemm_4bit) above GEMM_4BIT_FUSED_MAX_M rows (GEMM_4BIT_FP32_MAX_M for fp32
      input): the dequantized absmax and the weight dequantized to the compute dtype (out × in, a
      transient of every 4-bit layer's forward; the backward dequantizes in Python, which the tracker
      sees anyway), then F.linear; at or below them (a decode step's one row) the fused kernel's
      output only;
    - LLM.int8 (Linear8bitLt): MatMul8bitLt as on CUDA (not the CPU's MatMul8bitFp), with the CUDA
      kernels' outlier mask, int32 product and fp16 output; outlier columns are assumed absent.

    Enter it after (inside) the tracker so that the tracker sees the ops written out here."""
    from unittest import mock

    bnb = bitsandbytes()
    with mock.patch.object(bnb, "matmul", _matmul_as_on_cuda), _BnbCudaKernels():
        yield

"""The check behind the GPT-NeoX training figures' cause (verify/external.py, NEOX_TRAIN_CAUSE): the
doc's training benchmark traced with transformers 4.42.4's own GPT-NeoX, not the installed one.

Run it in an environment that has transformers 4.42.4 beside this project's torch, with the project
on PYTHONPATH (it reads verify's Tracker and CUDA model, nothing else of the project):

    python -m venv --system-site-packages .venv-tf442
    .venv-tf442/bin/pip install "transformers==4.42.4" "huggingface_hub<1.0" "tokenizers<0.20"
    PYTHONPATH=. .venv-tf442/bin/python reports/external/neox_442_trace.py

For every cell of the doc's 'Training' table it builds pythia-410m (models/pythia-410m.json) with
from_config(torch_dtype=float16) on fake tensors and runs the benchmark's loop (verify/external.py,
TRAIN_BENCH): a warm-up step that keeps `outputs`, then zero_grad and a step whose forward runs while
the previous `outputs` is alive, under verify's Tracker with the CUDA terms of an sm86 GPU. The one
data-dependent question 4.42 asks (whether the all-ones mask lets SDPA run causal without it) gets
the answer a real run gets. Prints the modelled peak beside the published one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from unittest import mock

import torch

# (batch, seq, published eager MB, published SDPA MB), the doc's 'Training' table (None: OOM)
TABLE = [(1, 128, 1789.95, 1789.95), (1, 256, 1845.83, 1844.84), (1, 512, 2278.38, 1953.76), (1, 1024, 4772.36, 2408.35),
         (1, 2048, 13484.1, 3882.01), (2, 128, 1843.86, 1844.78), (2, 256, 1999.72, 1951.67), (2, 512, 3613.16, 2406.77),
         (2, 1024, 8707.55, 3878.86), (2, 2048, None, 6825.13), (4, 128, 1947.6, 1952.06), (4, 256, 3008.39, 2405.99),
         (4, 512, 6290.58, 3877.29), (4, 1024, None, 6821.98), (4, 2048, None, 12705.1)]


def benchmark_peak(batch: int, seq: int, attn: str) -> tuple[int, str]:
    """Modelled max_memory_allocated of the benchmark's measured steps, and the phase it falls in."""
    import transformers
    from transformers.modeling_attn_mask_utils import AttentionMaskConverter

    from verify.formulas import cuda as C
    from verify.measure.fake import CudaKernelChoices, cuda_ops
    from verify.measure.tracker import Tracker
    from verify.torchapi import fake_mode

    fields = json.loads((Path(__file__).resolve().parents[2] / "models" / "pythia-410m.json").read_text())
    config = transformers.GPTNeoXConfig(**{k: v for k, v in fields.items() if k not in ("model_type", "architectures")})
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config, torch_dtype=torch.float16, attn_implementation=attn)
    mode = fake_mode()
    with mode:
        model = model.to_empty(device="cpu")
    tracker = Tracker()
    tracker.model_gpu(cuda_ops(C.ARCHS["sm86"], {}))
    unpadded = mock.patch.object(AttentionMaskConverter, "_ignore_causal_mask_sdpa", staticmethod(lambda *a, **k: True))
    with mode, unpadded, CudaKernelChoices(), tracker:
        tracker.add(list(model.buffers()), "buffers")
        tracker.add(list(model.parameters()), "params")
        inputs = {"input_ids": torch.randint(config.vocab_size - 1, (batch, seq)),
                  "attention_mask": torch.ones(batch, seq, dtype=torch.int64)}
        tracker.add(list(inputs.values()), "activations")
        model.train()
        tracker.mark("forward")
        outputs = model(**inputs)  # a warm-up step: its outputs stay referenced
        loss = outputs.logits.sum()
        tracker.mark("backward")
        loss.backward()
        tracker.reset_peak()  # timing_cuda: reset_peak_memory_stats
        tracker.mark("zero_grad")
        model.zero_grad()
        tracker.mark("forward")
        outputs = model(**inputs)
        loss = outputs.logits.sum()
        tracker.mark("backward")
        loss.backward()
    return tracker.gpu_peak, tracker.gpu_peak_at["phase"]


def main() -> None:
    import transformers

    if not transformers.__version__.startswith("4.42"):
        sys.exit(f"needs transformers 4.42 (this is {transformers.__version__}); see the module docstring")
    print("| batch | seq | attention | published MB | traced MB | error | peak in |")
    print("|---:|---:|---|---:|---:|---:|---|")
    for batch, seq, eager, sdpa in TABLE:
        for attn, published in (("eager", eager), ("sdpa", sdpa)):
            if published is None:
                continue
            peak, phase = benchmark_peak(batch, seq, attn)
            print(f"| {batch} | {seq} | {attn} | {published:.2f} | {peak / 1e6:.2f} | "
                  f"{(peak / 1e6 - published) / published:+.2%} | {phase} |", flush=True)


if __name__ == "__main__":
    main()

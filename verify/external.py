"""Memory figures others measured on NVIDIA GPUs and published, as data, reproduced on the fake backend.

No GPU is available to this project, so the fidelity of the fake backend is checked against GPU
figures published with the settings needed to rebuild them. Each `Figure` records where the number
stands (URL and section, or repository + path + commit), what printed it (which torch.cuda API, in
which unit) and the settings as MemorySpec fields; `needs` names what a reproduction waits for when
our backend cannot express the run yet (LoRA, 4-bit weights, a loss other than cross-entropy, no
optimizer, a plain forward, flash attention). `cause` holds the reason of a gap over 2 %, as read
in the source's own code and in the libraries' code, and `terms` the bytes that reason accounts for.

`run` traces every reproducible figure on fake tensors at the time it is called (nothing of ours is
stored here), appending each row to a JSONL file so that an interrupted run resumes; `write` puts
reports/external/EXTERNAL.md and external.json beside it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from decimal import Decimal
from pathlib import Path
from typing import Callable

from verify.units import UNITS, fmt_bytes, fmt_gb_gib, fmt_rel, rel_error

TOLERANCE = 0.02  # a gap up to this |relative error| needs no cause

# Revisions the figures and the code read to explain them are pinned to.
LLMOPT = "huggingface/transformers docs/source/en/llm_tutorial_optimization.md @008f5c8c29be84d4721dc6d1e0fcd72300580be4"
PEFT = "huggingface/peft method_comparison/MetaMathQA @51c2ff666b142d004c12609c9686cf17ca055751"
TUNE_FLAGS = "pytorch/torchtune README.md @1814feb17a9038e1a8053ce93111bd26774a8db6"
TUNE_TABLE = "pytorch/torchtune README.md @30b8519e86d2094879576e16ab1f8d21a6f6f9f7"
NEOX_DOC = "huggingface/transformers docs/source/en/model_doc/gpt_neox.md @3e7da9f11075a6e34d572fe04d28485a3989d274"
SDPA_RUN = ("rtx3080ti-16GB, PyTorch 2.2.1, OS Ubuntu 22.04, float16 (the doc's words); transformers: the branch of "
            "pull request #31031 (May 2024), read here in transformers 4.42.4, a release that contains its SDPA attention")
TRAIN_BENCH = ("optimum's tests/benchmark/benchmark_bettertransformer_training_minimal.py (stored copy at commit "
               "20c204f6b2e0), which fxmarty's gist 7e75cc39 (linked from the doc's pull request #31031; not in the "
               "stored corpus) adapts and whose CSV columns the doc's table has: from_pretrained(torch_dtype="
               "torch.float16), inputs = input_ids and an attention_mask of ones, model.train(); 5 warm-up steps "
               "(outputs = model(**inputs); loss = outputs.logits.sum(); loss.backward(), no zero_grad), then "
               "benchmark_common.timing_cuda: reset_peak_memory_stats, 100 × (model.zero_grad(); outputs = "
               "model(**inputs); loss = outputs.logits.sum(); loss.backward()), max_memory_allocated(device) * 1e-6; "
               "no optimizer")
INFER_BENCH = ("The 'Inference' table's script (a stored copy adapted from fxmarty's gist 5113e430, whose repository the "
               "index does not name; its columns and 'Per token latency' = time / max_token are the table's) loads "
               "the model with torch_dtype=float16, then hf_model.to(torch.float16), which also casts the rotary "
               "caches; it runs under torch.inference_mode() a warm-up and 50 timed calls after "
               "reset_peak_memory_stats. The latencies say which path: 11.3 ms per token at batch 4, seq 1024 is "
               "generate() of max_token = 100 tokens (min_new_tokens 100, greedy, use_cache), not one forward of "
               "4096 tokens (about 0.6 ms per token). Inputs: torch.randint ids and a mask of ones with mask[0, 0] = 0, "
               "None at batch 1")



def neox_train_terms(B: int, S: int, attn: str) -> tuple[tuple[str, int], ...]:
    """What the GPT-NeoX SDPA training benchmark (TRAIN_BENCH) holds at its peak, the end of a
    step's forward, beyond our forward's peak: transformers 4.42.4's GPT-NeoX (the release read for
    the doc's pull request #31031) and the benchmark's loop, each as bytes the caching allocator
    books (pythia-410m: L = 24 layers, h = 1024, V = 50,304, 2048 positions, rotary on d_r = 16 of
    each head's 64 dimensions)."""
    L, h, V, P, d_r = 24, 1024, 50_304, 2048, 16
    T = B * S
    book = lambda n: max(512, -(-n // 512) * 512)  # verify.formulas.cuda.round_size
    buffers = L * (book(P * P) + 2 * book(P * d_r * 4) + book(d_r // 2 * 4) + book(2)) - 2 * book(d_r // 2 * 4)
    previous = book(T * V * 2) + L * (book(T * h * 4) + book(T * 3 * h * 2)) + book(2)
    terms = [("transformers 4.42's buffers: per layer the causal mask `bias` (2048² bools), fp32 cos/sin caches "
              "(2·2048·16·4), inv_freq and masked_bias, less our model's two 32-byte inv_freq", buffers),
             ("the previous step's outputs, alive until `outputs =` is reassigned after this forward: fp16 logits "
              "B·S·V·2, per layer the present key in fp32 B·S·h·4 and the present value, a view that keeps the "
              "fused qkv output B·S·3h·2, and the loss scalar", previous)]
    if attn == "sdpa":  # SDPA gets q, k cast to fp16; the fp32 key survives only in this step's present
        terms.append(("this step's presents (use_cache defaults to config.use_cache = True): the fp32 keys, "
                      "L·B·S·h·4 (the values share the qkv output SDPA saves anyway)", L * book(T * h * 4)))
    else:  # eager attention computes on the fp32 q, k and saves them
        terms.append(("4.42's eager attention saves q and k in fp32 (rotary applied against the fp32 caches), ours "
                      "in fp16: L·2·B·S·h·(4 − 2)", L * 2 * T * h * 2))
    return tuple(terms)


def peft_kept_terms() -> tuple[tuple[str, int], ...]:
    """What peft's MetaMathQA run.py holds when it reads memory_allocated() after a step and our steady
    state does not (Llama-3.2-3B: V = 128,256, L = 28 layers, 8 key/value heads of 128, B = 4), per
    padded position of the batch: the bf16 logits V·2, the DynamicCache's key and value 2·L·8·128·2,
    and the batch's input_ids, attention_mask and labels (int64) 3·8: 371,224 bytes. Counted at the
    published unpadded tokens of steps 1-250 (211,719 minus one EOS per sample, 1000 samples): the
    padded count, B × the longest sample of each batch, is not published, so this is a lower bound."""
    V, L, kv, d = 128_256, 28, 8, 128
    per_position = V * 2 + 2 * L * kv * d * 2 + 3 * 8
    tokens, steps = 211_719 - 1000, 250
    sm89 = 4096 * 1024 * 2 + 16 * 1024 * 8  # verify.formulas.cuda.cublas_workspace(8): L40S is sm89
    return (("`outputs` (bf16 logits, the DynamicCache that use_cache = config.use_cache = True builds in training "
             "too) and `batch`, 371,224 bytes per position, at the mean unpadded 842.9 positions a step",
             round(per_position * tokens / steps)),
            ("cuBLAS workspaces of the main and autograd threads (verify/formulas/cuda.py blas_workspaces, sm89), "
             "booked by memory_allocated() and not in our traced steady state", 2 * sm89),
            ("run.py subtracts accelerator_memory_init, max_memory_reserved() after nn.Linear(1, 1).to(device): "
             "one 2 MiB small-pool segment (kSmallBuffer)", -2_097_152))


PEFT_CAUSE = (
    "run.py (method_comparison/MetaMathQA/run.py @51c2ff66, train()) reads memory_allocated() right after "
    "lr_scheduler.step(), while `outputs = model(**batch, ...)` and `batch` are still referenced: the bf16 logits "
    "B·S·V·2 (the loss upcasts a copy inside ForCausalLMLoss, freed) and the DynamicCache LlamaModel builds because "
    "use_cache defaults to config.use_cache = True (transformers' merge_with_config_defaults turns it off only under "
    "gradient checkpointing), which keeps every layer's key and value after backward; our step drops both and traces "
    "use_cache=False. The published figures confirm the per-token term: over the file's 20 windows of 250 steps, "
    "'mem allocated avg' rises with the window's tokens per step by 380,386 bytes per token (r = 0.985; the "
    "full fine-tune's file: 390,909), where these tensors hold 371,224 bytes per padded position (padding adds "
    "2-5 % positions over the unpadded tokens). Not established: 18-19 MB that does not scale with tokens (the "
    "regression's intercept minus ours and the two fixed terms; the caching allocator's unsplit blocks are a "
    "candidate), and the padded token count, so the first term is a lower bound.")


NEOX_TRAIN_CAUSE = (
    "Not our trace: the benchmark ran transformers 4.42 with a loop that keeps its outputs. (1) transformers 4.42.4's "
    "GPTNeoXAttention registers per layer a `bias` buffer tril(ones(2048, 2048), bool), a masked_bias and a rotary "
    "module whose inv_freq and cos/sin caches are built with .float(), so fp32 whatever torch_dtype (modeling_gpt_neox.py, "
    "GPTNeoXAttention._init_bias, GPTNeoXRotaryEmbedding._set_cos_sin_cache); q·cos then promotes q and k to fp32 "
    "(torch.cat((query, query_pass)) is fp32), which the SDPA class casts back to fp16 and the eager `_attn` keeps "
    "(its baddbmm saves the fp32 q and k); present = (key, value) is returned because use_cache defaults to True. "
    "transformers 5.23's GPTNeoX has none of these buffers, applies rotary in fp16 and is traced with use_cache=False. "
    "(2) `outputs = model(**inputs)` keeps the previous step's logits and presents alive until this forward returns "
    "(and this step's logits through backward); our step drops the logits once the loss exists. The benchmark's peak is "
    "therefore the end of a forward, ours (with the cuBLAS copies of the stride-0 gradient of logits.sum() in the "
    "output head's backward, verify/formulas/cuda.py cublas_operand_copies) the output head's backward; the terms are "
    "added to our forward's peak (traced, plus the CUDA terms booked at the forward's end). Check: transformers 4.42.4 "
    "installed apart and its GPT-NeoX traced by verify's Tracker with the same CUDA model on fake tensors, through the "
    "benchmark's loop (reports/external/neox_442_trace.py), gives {check} MB; over the table's 27 training cells it is "
    "within 0.03 % on 16 and 0.13 % to 1.54 % low on the 11 others, at B·S <= 512 or eager B·S = 2048 (10 to 30 MB "
    "missing there: cause not established; reports/external/neox_442_trace.md).")


def neox_generate_terms(B: int, S: int) -> tuple[tuple[str, int], ...]:
    """What the GPT-NeoX inference benchmark (INFER_BENCH) holds beyond the weights at its peak, the
    end of the first decode step, with transformers of the doc's pull request #31031 (May 2024):
    the fp16 model (L = 24, h = 1024, V = 50,304, 2048 positions, rotary on 16 of 64 dimensions),
    as bytes the caching allocator books."""
    L, h, V, P, d_r = 24, 1024, 50_304, 2048, 16
    T = B * S
    return (("per-layer buffers of transformers 4.42's GPTNeoXAttention: the causal mask `bias` 2048² bools, fp16 "
             "cos/sin caches 2·2048·16·2 (cast by .to(float16)), inv_freq and masked_bias (512 each)",
             L * (P * P + 2 * P * d_r * 2 + 512 + 512)),
            ("the cuBLAS workspace of a pre-Hopper GPU (verify/formulas/cuda.py cublas_workspace(8))", 8_519_680),
            ("the prefill's presents, still referenced: per layer the fp16 key B·S·h·2 and the value, a view that "
             "keeps the fused qkv output B·S·3h·2", L * (T * h * 2 + T * 3 * h * 2)),
            ("the prefill's fp16 logits of every position, B·S·V·2, held by `outputs` through the first decode "
             "step (no `del outputs` in _sample yet)", T * V * 2),
            ("the first decode step's cache: the legacy tuple cache concatenates into new tensors, "
             "2·L·B·(S + 1)·h·2", 2 * L * B * (S + 1) * h * 2))


NEOX_INFER_CAUSE = (
    "The table's figures are generations with transformers as of the pull request, which holds at the first decode "
    "step what transformers 5.23's generate() no longer holds. (1) GenerationMixin._sample kept `outputs` (the "
    "prefill's logits of every position, fp16) until the next step's forward returned (transformers 4.41.2's "
    "_sample: next_token_logits = outputs.logits[:, -1, :], a view, and no `del outputs`; 4.42.4 clones the last "
    "position and deletes `outputs`, because outputs.logits 'may be very large for first iteration'); 5.23 computes the prefill's logits for the last "
    "position only (logits_to_keep). (2) 4.42's GPT-NeoX returns tuple presents: the value a view of the fused qkv "
    "output, so the prefill keeps B·S·3h·2 per layer for its values, and each decode step torch.cat's the cache into "
    "new tensors while the previous ones are still referenced. (3) Per-layer mask buffers (modeling_gpt_neox.py, "
    "GPTNeoXAttention._init_bias). Ours traces 5.23's generation (its peak is the prefill's). The sum of the terms "
    "over our weights' bytes gives {check}; the same sum at the 'Inference' table's 15 SDPA cells is within 0.11 % "
    "on 10 and 0.36 % to 1.06 % low on the 5 with B·S of 256 or 512 (4 to 12 MB missing there: not established). "
    "An earlier reading as 50 repeated forwards with the previous output alive "
    "does not hold: with the values' qkv storage it gives 3,357.8 MB at batch 4, seq 1024.")


@dataclass(frozen=True)
class Figure:
    """One memory figure measured on an NVIDIA GPU and published, with the settings to rebuild it."""

    id: str  # short stable id, used by --only
    source: str  # URL of the page, file, issue or pull request
    where: str  # section / table / line, or repository + path + commit
    quote: str  # the published sentence or table cell, short
    gpu: str  # the GPU as the source names it ("not stated" and what the text implies otherwise)
    api: str  # what produced the number: max_memory_allocated, memory_allocated, peak_memory_active, reserved...
    versions: str  # library versions as published, or "not stated"
    published: str  # the number exactly as printed
    published_unit: str  # the unit of the code that printed it ("GiB" for a bytes / 1024**3 helper, "MB" for * 1e-6)
    covers: str  # what the figure holds: weights only, the peak of a generation, live bytes after a step...
    compare: str  # our figure it is set against: "peak" (peak_bytes) or "steady" (live bytes after the optimizer step)
    spec: dict  # the settings as verify.measure.memory.MemorySpec fields (values MemorySpec lacks where needs says so)
    needs: str = ""  # what the reproduction waits for; "" when our backend runs it now
    setup: str = ""  # settings the source does not state, and how each was determined (read, deduced or guessed)
    cause: str = ""  # why ours differs by more than 2 %, as read in the source's and the libraries' code
    terms: tuple = ()  # (what, bytes) the published run held and ours does not (+), or the reverse (-), per `cause`
    terms_at: str = ""  # "": the terms are added to our compared figure; "forward": to our forward's peak (where the
    # published run peaks in its forward and ours elsewhere): the traced forward peak + the CUDA terms at the forward's end;
    # "weights": to our weights' bytes (where the published run peaks while loading them)

    @property
    def published_bytes(self) -> int:
        """The published number in bytes (published × published_unit), rounded to a whole byte."""
        return int((Decimal(self.published) * UNITS[self.published_unit]).to_integral_value())

    def as_dict(self) -> dict:
        return {**asdict(self), "terms": [list(t) for t in self.terms], "published_bytes": self.published_bytes}


def catalogue() -> list[Figure]:
    """Every published figure, reproducible or not, in report order."""
    octocoder = dict(model="octocoder", mode="generate", dtype="bf16", precision="pure", batch=1, seq=20,
                     new_tokens=60, attn="eager", gpu_arch="sm80")  # the guide's 40 GB A100
    llmopt_common = dict(
        source="https://huggingface.co/docs/transformers/llm_tutorial_optimization",
        gpu="not stated (the guide picks bigcode/octocoder because it 'can be run on a single 40 GB A100 GPU')",
        versions="not stated (2023 guide; it converts the model with BetterTransformer to reach SDPA)",
        published_unit="GiB",
    )
    quant_setup = ("Prompt of 20 tokens, 60 new tokens, greedy, as llmopt-octocoder-bf16. from_pretrained gets no "
                   "torch_dtype: transformers then loaded bitsandbytes models in fp16 ('Overriding torch_dtype=None with "
                   "torch_dtype=torch.float16 due to requirements of bitsandbytes'), so embeddings, norms and the tied "
                   "output head are fp16, and device_map defaults to the current GPU.")
    peft_ft = dict(model="llama3.2-3b", mode="train", dtype="bf16", precision="pure", optimizer="adamw", batch=4,
                   seq=768, attn="sdpa", checkpointing=False, gpu_arch="sm89")  # L40S
    neox = dict(model="pythia-410m", dtype="fp16", precision="pure", gpu_arch="sm86")  # RTX 3080 Ti
    neox_doc_common = dict(
        source="https://github.com/huggingface/transformers/blob/3e7da9f11075a6e34d572fe04d28485a3989d274/docs/"
               "source/en/model_doc/gpt_neox.md",
        gpu="RTX 3080 Ti 16 GB",
        versions=SDPA_RUN,
        published_unit="MB",
        compare="peak",
    )
    tune8b = dict(model="llama3-8b", mode="train", dtype="bf16", precision="pure", batch=2, seq=2048, attn="sdpa",
                  checkpointing=True)
    tune_table_common = dict(
        source="https://github.com/pytorch/torchtune/blob/30b8519e86d2094879576e16ab1f8d21a6f6f9f7/README.md",
        api="not stated (torchtune.training.get_memory_stats logs peak_memory_active, peak_memory_alloc and "
            "peak_memory_reserved, each bytes / 2^30)",
        versions="not stated (torchtune at 30b8519e, September 2024)",
        published_unit="GiB",
        covers="peak per GPU over one epoch of the recipe",
        compare="peak",
    )
    tune_table_setup = ("The README's note: batch size 2 without gradient accumulation, a dataset packed to 2048 "
                        "tokens, torch.compile on. Llama 3.1 8B has the module sizes of the bundled llama3-8b "
                        "(only RoPE scaling and the context length differ, neither holds memory).")
    return [
        Figure(
            id="llmopt-octocoder-bf16",
            where=f"{LLMOPT}, section '1. Lower Precision', output of "
                  "bytes_to_giga_bytes(torch.cuda.max_memory_allocated())",
            quote="bytes_to_giga_bytes(torch.cuda.max_memory_allocated()) -> 29.0260648727417",
            api="torch.cuda.max_memory_allocated since the process started (no reset before it), so loading is included",
            published="29.0260648727417",
            covers="peak of loading bigcode/octocoder in bf16 (device_map='auto') and a pipeline generation of "
                   "60 new tokens from a 20-token prompt",
            compare="peak",
            spec=octocoder,
            setup="Prompt length 20 read in the same guide (section 3.2 prints 'length of key-value cache 20' for "
                  "the same prompt); max_new_tokens=60 as called. Greedy decoding assumed (sampling adds a few "
                  "vocabulary-sized vectors). Eager attention: GPTBigCode had no SDPA path then, hence the "
                  "guide's BetterTransformer step. Printed by the guide's bytes / 1024 / 1024 / 1024 helper: GiB.",
            **llmopt_common,
        ),
        Figure(
            id="llmopt-octocoder-long-eager",
            where=f"{LLMOPT}, section '2. Flash Attention', first bytes_to_giga_bytes(torch.cuda.max_memory_allocated())",
            quote="bytes_to_giga_bytes(torch.cuda.max_memory_allocated()) -> 37.668193340301514",
            api="torch.cuda.max_memory_allocated after flush() (gc, empty_cache, reset_peak_memory_stats)",
            published="37.668193340301514",
            covers="peak of loading octocoder in bf16 and generating 60 tokens from long_prompt = 10 × the guide's "
                   "system prompt + the question",
            compare="peak",
            spec={**octocoder, "seq": None},
            needs="the prompt's token count: not published (it needs the StarCoder tokenizer, not available here)",
            **llmopt_common,
        ),
        Figure(
            id="llmopt-octocoder-long-flash",
            where=f"{LLMOPT}, section '2. Flash Attention', second bytes_to_giga_bytes(torch.cuda.max_memory_allocated())",
            quote="bytes_to_giga_bytes(torch.cuda.max_memory_allocated()) -> 32.617331981658936",
            api="torch.cuda.max_memory_allocated after flush()",
            published="32.617331981658936",
            covers="as llmopt-octocoder-long-eager, after model.to_bettertransformer() under "
                   "sdp_kernel(enable_flash=True, enable_math=False, enable_mem_efficient=False)",
            compare="peak",
            spec={**octocoder, "seq": None, "attn": "flash"},
            needs="flash attention (SDPA restricted to the flash kernel), and the prompt's token count (not published)",
            **llmopt_common,
        ),
        Figure(
            id="llmopt-octocoder-int8",
            where=f"{LLMOPT}, section '1. Lower Precision', output after load_in_8bit=True",
            quote="bytes_to_giga_bytes(torch.cuda.max_memory_allocated()) -> 15.219234466552734",
            api="torch.cuda.max_memory_allocated after flush()",
            published="15.219234466552734",
            covers="peak of loading octocoder with load_in_8bit=True and generating 60 tokens from the 20-token prompt",
            compare="peak",
            spec={**octocoder, "dtype": "fp16", "quant": "int8"},
            setup=quant_setup + " load_in_8bit=True: LLM.int8 weights (int8 + an fp32 scale per row), threshold 6.0.",
            cause=("The figure is the peak of loading, not of generation (flush() resets the peak before "
                   "from_pretrained). bitsandbytes of the guide's time (before 0.45; read in stored copies of "
                   "nn/modules.py) quantizes each weight as it is loaded: Int8Params.cuda makes an fp16 copy on the "
                   "GPU, B = self.data.contiguous().half().cuda(device), then double_quant(B) returns the int8 CB and "
                   "its transpose CBt, deleted only after; ours (bitsandbytes 0.50.2, int8_vectorwise_quant) makes no "
                   "CBt, and the fake backend traces generation only. transformers' loader reads each shard's tensors "
                   "in sorted order and the last shard ends with layer 39, so the last quantized weight loaded is "
                   "transformer.h.39.mlp.c_proj.weight (6144 × 24576; assumed: the checkpoint's index is not in the "
                   "stored corpus), loaded with every other weight in place but ln_f (24 KiB), before dispatch_model "
                   "moves the 64 MiB mask buffer. The terms are added to our weights' bytes (params with their "
                   "quantization state, exact). In generation the guide's bitsandbytes also converted each int8 "
                   "weight to the col_ampere layout at the first forward (F.transform, one more copy until the "
                   "layer's forward returns): ours + that copy, 16.11 GB, stays below the loading peak."),
            terms=(("fp16 copy of the last weight loaded, 6144·24576·2", 301_989_888),
                   ("its transposed int8 copy CBt from double_quant, 6144·24576", 150_994_944)),
            terms_at="weights",
            **llmopt_common,
        ),
        Figure(
            id="llmopt-octocoder-4bit",
            where=f"{LLMOPT}, section '1. Lower Precision', output after load_in_4bit=True",
            quote="bytes_to_giga_bytes(torch.cuda.max_memory_allocated()) -> 9.543574333190918",
            api="torch.cuda.max_memory_allocated after flush()",
            published="9.543574333190918",
            covers="peak of loading octocoder with load_in_4bit=True and generating 60 tokens from the 20-token prompt",
            compare="peak",
            spec={**octocoder, "dtype": "fp16", "quant": "fp4"},
            setup=quant_setup + " load_in_4bit=True with BitsAndBytesConfig's defaults, then as now: FP4, blocks of "
                                "64 with fp32 absmax, no double quantization, compute dtype fp32 (Linear4bit casts "
                                "its input to fp32 and its output back to fp16).",
            cause=("bitsandbytes of the guide's time (before the gemm_4bit op; read in stored copies of "
                   "autograd/_functions.py) ran a prompt of more than one row through MatMul4Bit: "
                   "F.dequantize_4bit(B, quant_state).to(A.dtype), the weight dequantized to the dtype it was "
                   "quantized from (fp16) and then copied to the fp32 compute dtype, both alive at the copy; "
                   "bitsandbytes 0.50.2 (ours) dequantizes straight to fp32 (_dequant_linear_fallback). At the "
                   "prefill's MLP weights (24576 × 6144), where our peak is, that is one fp16 copy more. Loading "
                   "(an fp16 copy of one weight beside the 4-bit ones) peaks lower than the prefill."),
            terms=(("the fp16 dequantized copy beside the fp32 one, 24576·6144·2", 301_989_888),),
            **llmopt_common,
        ),
        Figure(
            id="peft-metamathqa-full-ft",
            source="https://github.com/huggingface/peft/blob/51c2ff666b142d004c12609c9686cf17ca055751/method_comparison/"
                   "MetaMathQA/results/full-finetuning--llama-3.2-3B-lr_0.00001.json",
            where=f"{PEFT}, results/full-finetuning--llama-3.2-3B-lr_0.00001.json, train_info.metrics[0]"
                  "['mem allocated avg'] (steps 1-250), logged by run.py",
            quote='"mem allocated avg": 26068364077.056',
            gpu="NVIDIA L40S",
            api="torch.cuda.memory_allocated() after every step (after optimizer.step and lr_scheduler.step) minus the "
                "reserved bytes at start, averaged over steps 1-250 (run.py)",
            versions="torch 2.13.0+cu130, transformers 5.13.1, peft 0.19.2.dev0 (meta_info of the same file)",
            published="26068364077.056",
            published_unit="B",
            covers="live bytes after the optimizer step: bf16 weights, gradients (zeroed at the next step's start), "
                   "AdamW state, and what the loop still references",
            compare="steady",
            spec=peft_ft,
            setup="train_config of the same file: meta-llama/Llama-3.2-3B, dtype bfloat16 without autocast "
                  "(use_amp false), batch 4, torch AdamW, max_seq_length 768, no gradient checkpointing. Sequences are "
                  "MetaMathQA samples bucketed by length (BUCKET_FACTOR 20) and cut at 768 tokens, so S varies by "
                  "batch; the file's first window has 211,719 tokens in steps 1-250 ('tokens / sec' × 'train time'; "
                  "run.py counts each sample's tokens + 1 for the EOS target), so 842.9 unpadded tokens a step.",
            cause=PEFT_CAUSE,
            terms=peft_kept_terms(),
        ),
        Figure(
            id="peft-metamathqa-lora-r32",
            source="https://github.com/huggingface/peft/blob/51c2ff666b142d004c12609c9686cf17ca055751/method_comparison/"
                   "MetaMathQA/results/lora--llama-3.2-3B-rank32.json",
            where=f"{PEFT}, results/lora--llama-3.2-3B-rank32.json, train_info.metrics[0]['mem allocated avg'] "
                  "(steps 1-250)",
            quote='"mem allocated avg": 6927565711.36',
            gpu="NVIDIA L40S",
            api="torch.cuda.memory_allocated() after every step, averaged over steps 1-250 (run.py)",
            versions="as peft-metamathqa-full-ft (meta_info of the file)",
            published="6927565711.36",
            published_unit="B",
            covers="live bytes after the optimizer step of a LoRA fine-tune",
            compare="steady",
            spec={**peft_ft, "mode": "lora", "lora_rank": 32, "lora_targets": "q_proj,v_proj"},
            setup="experiments/lora/llama-3.2-3B-rank32/adapter_config.json: r 32, lora_alpha 64, dropout 0, "
                  "target_modules null (peft's default for llama: q_proj, v_proj); the bf16 base frozen, the "
                  "adapters fp32 (peft's autocast_adapter_dtype); train_config and data as peft-metamathqa-full-ft "
                  "(the same 211,719 tokens in steps 1-250).",
            cause=PEFT_CAUSE,
            terms=peft_kept_terms(),
        ),
        Figure(
            id="torchtune-llama3.2-3b-packed",
            source="https://github.com/pytorch/torchtune/blob/1814feb17a9038e1a8053ce93111bd26774a8db6/README.md",
            where=f"{TUNE_FLAGS} (#2003 'add flags to readme'), section 'Optimization flags', row '+ Packed Dataset', "
                  "column 'Peak Memory Active (GiB)'",
            quote="| + Packed Dataset | 60.0 | +135.16% | 7075 | +238.40% |",
            gpu="A100 (60 GiB implies the 80 GB model)",
            api="peak_memory_active: torch.cuda.memory_stats()['active_bytes.all.peak'] / 2^30 "
                "(torchtune.training.get_memory_stats)",
            versions="not stated (torchtune at 1814feb1, November 2024)",
            published="60.0",
            published_unit="GiB",
            covers="peak of a training step of the full_finetune_single_device recipe",
            compare="peak",
            spec=dict(model="llama3.2-3b", mode="train", dtype="bf16", precision="pure", optimizer="adamw", batch=2,
                      seq=4096, attn="sdpa", checkpointing=False, gpu_arch="sm80"),
            setup="The table's baseline: full_finetune_single_device, Llama 3.2 3B, batch 2, max sequence 4096, bf16, "
                  "A100; this row packs the dataset to 4096 tokens. Activation checkpointing, compile, chunked "
                  "cross-entropy, optimizer-in-backward, activation offloading and 8-bit AdamW are rows added after "
                  "it ('each technique is added on top of the previous one'), so off here; torch.optim.AdamW as in "
                  "the table's reproduction command (deduced, not stated for this row). torchtune packs with a "
                  "document mask through flex attention; ours runs SDPA causal over the 4096 tokens, which saves the "
                  "same tensors (output and log-sum-exp).",
            cause="torchtune's MultiHeadAttention (torchtune/modules/attention.py @1814feb1) expands k and v from the "
                  "8 key/value heads to the 24 query heads with k.unsqueeze(2).expand(...).flatten(1, 2) before the "
                  "attention call; flatten copies them and the attention saves the copies for backward. transformers "
                  "5.23 passes enable_gqa=True to SDPA when there is no mask (integrations/sdpa_attention.py, "
                  "use_gqa_in_sdpa) and keeps k, v at 8 heads. Difference: 2 · B · S · (24 − 8) · 128 · 2 bytes = "
                  "67,108,864 per layer, 1,879,048,192 over 28 layers.",
            terms=(("k, v expanded to 24 heads and saved by torchtune's attention, 28 layers", 1_879_048_192),),
        ),
        Figure(
            id="torchtune-llama3.1-8b-full-4090",
            where=f"{TUNE_TABLE}, section 'Memory and training speed', row 'Llama 3.1 8B | Full finetune | 1x 4090'; "
                  "config recipes/configs/llama3_1/8B_full_single_device.yaml at the same commit",
            quote="| Llama 3.1 8B | Full finetune | 1x 4090 | 18.9 GiB | 1650 |",
            gpu="RTX 4090",
            published="18.9",
            spec={**tune8b, "optimizer": "paged-adamw-8bit", "gpu_arch": "sm89"},
            setup=tune_table_setup + " Config: bitsandbytes PagedAdamW8bit, optimizer_in_bwd, activation "
                                     "checkpointing, CEWithChunkedOutputLoss.",
            needs="8-bit paged AdamW (bitsandbytes), the optimizer step fused into backward, torch.compile, "
                  "chunked cross-entropy",
            **tune_table_common,
        ),
        Figure(
            id="torchtune-llama3.1-8b-lora-a6000",
            where=f"{TUNE_TABLE}, section 'Memory and training speed', row 'Llama 3.1 8B | LoRA | 1x A6000'; "
                  "config recipes/configs/llama3_1/8B_lora_single_device.yaml at the same commit",
            quote="| Llama 3.1 8B | LoRA | 1x A6000 | 30.3 GiB  | 4699 |",
            gpu="RTX A6000",
            published="30.3",
            spec={**tune8b, "optimizer": "adamw", "mode": "lora", "lora_rank": 8, "lora_targets": "q_proj,v_proj", "gpu_arch": "sm86"},
            setup=tune_table_setup + " Config: LoRA rank 8, alpha 16 on q_proj and v_proj, torch.optim.AdamW, "
                                     "activation checkpointing, CEWithChunkedOutputLoss.",
            needs="torch.compile, chunked cross-entropy",
            **tune_table_common,
        ),
        Figure(
            id="torchtune-llama3.1-8b-qlora-4090",
            where=f"{TUNE_TABLE}, section 'Memory and training speed', row 'Llama 3.1 8B | QLoRA | 1x 4090'; "
                  "config recipes/configs/llama3_1/8B_qlora_single_device.yaml at the same commit",
            quote="| Llama 3.1 8B | QLoRA | 1x 4090 | 7.4 GiB | 2413  |",
            gpu="RTX 4090",
            published="7.4",
            spec={**tune8b, "optimizer": "adamw", "mode": "lora", "lora_rank": 8, "quant": "nf4", "gpu_arch": "sm89",
                  "lora_targets": "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"},
            setup=tune_table_setup + " Config: NF4 base weights, LoRA rank 8, alpha 16 on q, k, v, output_proj and "
                                     "the MLP, torch.optim.AdamW, activation checkpointing, CEWithChunkedOutputLoss.",
            needs="torchao's NF4 tensor (ours: bitsandbytes' NF4), torch.compile, chunked cross-entropy",
            **tune_table_common,
        ),
        Figure(
            id="neox-sdpa-train-b1-s1024-eager",
            where=f"{NEOX_DOC}, section 'Using Scaled Dot Product Attention (SDPA)', table 'Training', row batch 1, "
                  "seq 1024, column 'Eager peak mem (MB)'",
            quote="| 1 | 1024 | 0.19 | 0.102 | 86.777 | 4772.36 | 2408.35 | 98.159 |",
            api="torch.cuda.max_memory_allocated(device) * 1e-6 (MB = 10^6 bytes)",
            published="4772.36",
            covers="peak of 100 training steps of EleutherAI/pythia-410m-deduped in fp16 without an optimizer",
            spec={**neox, "mode": "train", "optimizer": "none", "loss": "sum", "batch": 1, "seq": 1024, "attn": "eager"},
            setup=f"Steps: {TRAIN_BENCH}.",
            cause=NEOX_TRAIN_CAUSE.format(check="4,772.37 (published 4,772.36)"),
            terms=neox_train_terms(1, 1024, "eager"),
            terms_at="forward",
            **neox_doc_common,
        ),
        Figure(
            id="neox-sdpa-train-b4-s512-sdpa",
            where=f"{NEOX_DOC}, section 'Using Scaled Dot Product Attention (SDPA)', table 'Training', row batch 4, "
                  "seq 512, column 'SDPA peak mem (MB)'",
            quote="| 4 | 512 | 0.275 | 0.187 | 47.145 | 6290.58 | 3877.29 | 62.242 |",
            api="torch.cuda.max_memory_allocated(device) * 1e-6 (MB = 10^6 bytes)",
            published="3877.29",
            covers="peak of 100 training steps of EleutherAI/pythia-410m-deduped in fp16 without an optimizer",
            spec={**neox, "mode": "train", "optimizer": "none", "loss": "sum", "batch": 4, "seq": 512, "attn": "sdpa"},
            setup=f"Steps: {TRAIN_BENCH}.",
            cause=NEOX_TRAIN_CAUSE.format(check="3,877.33 (published 3,877.29)"),
            terms=neox_train_terms(4, 512, "sdpa"),
            terms_at="forward",
            **neox_doc_common,
        ),
        Figure(
            id="neox-sdpa-forward-b4-s1024-sdpa",
            where=f"{NEOX_DOC}, section 'Using Scaled Dot Product Attention (SDPA)', table 'Inference', row batch 4, "
                  "seq 1024, column 'Mem SDPA (MB)'",
            quote="| 4 | 1024 | 11.765 | 11.303 | 4.09 | 2558.96 | 2546.04 | 0.508 |",
            api="torch.cuda.max_memory_allocated(device) * 1e-6 (MB = 10^6 bytes), after a warm-up call",
            published="2546.04",
            covers="peak of generate() of 100 new tokens from a 1024-token batch of 4 (fp16 weights, SDPA), after a warm-up generation (the id keeps its first reading)",
            spec={**neox, "mode": "generate", "batch": 4, "seq": 1024, "new_tokens": 100, "attn": "sdpa"},
            setup=INFER_BENCH + ". Ours: an unpadded batch (our generation pads nothing; the one masked position changes no tensor's size).",
            cause=NEOX_INFER_CAUSE.format(check="2,543.46 MB (published 2,546.04)"),
            terms=neox_generate_terms(4, 1024),
            terms_at="weights",
            **neox_doc_common,
        ),
        Figure(
            id="neox-sdpa-forward-b1-s128-sdpa",
            where=f"{NEOX_DOC}, section 'Using Scaled Dot Product Attention (SDPA)', table 'Inference', row batch 1, "
                  "seq 128, column 'Mem SDPA (MB)'",
            quote="| 1 | 128 | 6.569 | 5.858 | 12.14 | 974.831 | 974.826 | 0 |",
            api="torch.cuda.max_memory_allocated(device) * 1e-6 (MB = 10^6 bytes), after a warm-up call",
            published="974.826",
            covers="peak of generate() of 100 new tokens from one 128-token sequence (fp16 weights, SDPA), after a warm-up generation (the id keeps its first reading)",
            spec={**neox, "mode": "generate", "batch": 1, "seq": 128, "new_tokens": 100, "attn": "sdpa"},
            setup=INFER_BENCH + ". Ours: an unpadded batch (our generation pads nothing; the one masked position changes no tensor's size).",
            cause=NEOX_INFER_CAUSE.format(check="973.75 MB (published 974.826)"),
            terms=neox_generate_terms(1, 128),
            terms_at="weights",
            **neox_doc_common,
        ),
    ]


def select(only: str | None = None, figures: list[Figure] | None = None) -> list[Figure]:
    """The figures `only` names ("a,b"), in catalogue order; all of them when `only` is empty."""
    figures = catalogue() if figures is None else figures
    if not only:
        return figures
    ids = {i.strip() for i in only.split(",") if i.strip()}
    unknown = sorted(ids - {f.id for f in figures})
    if unknown:
        raise ValueError(f"unknown figure id(s) {', '.join(unknown)}; ids are {', '.join(f.id for f in figures)}")
    return [f for f in figures if f.id in ids]


def memory_spec(fig: Figure):
    """The fake-backend MemorySpec of a reproducible figure."""
    from verify.measure.memory import MemorySpec

    return MemorySpec(backend="fake", **fig.spec)


def reproduce(fig: Figure) -> dict:
    """One report row: the figure, and, where our backend can run it, our bytes from a fake-backend
    trace made now, the signed error (ours − published) / published and the error after the
    figure's known terms."""
    row = {**fig.as_dict(), "status": "not reproduced yet", "ours_bytes": None, "rel_error": None,
           "ours_plus_terms_bytes": None, "rel_error_after_terms": None, "terms_added_to_bytes": None, "ours_detail": {},
           "error": None}
    if fig.needs:
        return row
    from verify.measure.fake import run as trace

    try:
        result = trace(memory_spec(fig))
    except (ValueError, RuntimeError) as e:  # TraceError, or a config transformers rejects
        return {**row, "status": "error", "error": str(e).splitlines()[0][:300]}
    ours = result.peak_bytes if fig.compare == "peak" else result.snapshots["steady"]["total"]
    base = ours
    if fig.terms_at == "forward":
        base = result.phases["forward"] + result.snapshots.get("forward_end", {}).get("cuda_terms", 0)
    elif fig.terms_at == "weights":
        base = result.params_bytes
    explained = base + sum(b for _, b in fig.terms)
    return {**row, "status": "reproduced", "ours_bytes": ours, "rel_error": rel_error(ours, fig.published_bytes),
            "ours_plus_terms_bytes": explained if fig.terms else None,
            "rel_error_after_terms": rel_error(explained, fig.published_bytes) if fig.terms else None,
            "terms_added_to_bytes": base if fig.terms else None,
            "ours_detail": {"peak_bytes": result.peak_bytes, "peak_phase": result.peak_phase,
                            "params_bytes": result.params_bytes, "grads_bytes": result.grads_bytes,
                            "optimizer_bytes": result.optimizer_bytes, "kv_cache_bytes": result.kv_cache_bytes,
                            "at_peak": result.at_peak, "steady": result.snapshots.get("steady")}}


def run(only: str | None = None, figures: list[Figure] | None = None, jsonl: Path | None = None,
        progress: Callable[[int, int, dict, bool], None] | None = None) -> list[dict]:
    """A row per selected figure, each stamped with when, by which code (fingerprint, commit) and in
    how many seconds it was made. With `jsonl`, rows an interrupted run left there with this
    fingerprint are reused (errors are retried) and each new row is appended as soon as it exists."""
    import time

    from verify import jsonl as jsonl_file
    from verify.provenance import fingerprint, git_commit, hardware, utc_now

    chosen = select(only, figures)
    fp, commit = fingerprint(hardware()), git_commit()
    done = {r["id"]: r for r in jsonl_file.read(jsonl) if r.get("fingerprint") == fp and r.get("status") != "error"} \
        if jsonl else {}
    rows = []
    for i, fig in enumerate(chosen, 1):
        resumed = fig.id in done
        if resumed:
            row = done[fig.id]
        else:
            start, measured_at = time.perf_counter(), utc_now()
            row = {**reproduce(fig), "measured_at": measured_at, "fingerprint": fp, "commit": commit,
                   "seconds": round(time.perf_counter() - start, 2)}
            if jsonl:
                jsonl_file.append(jsonl, row)
        rows.append(row)
        if progress:
            progress(i, len(chosen), row, resumed)
    return rows


# --- the report -----------------------------------------------------------------------------


def _link(url: str) -> str:
    """A Markdown link labelled with the repository and file (GitHub) or the page name."""
    parts = url.rstrip("/").split("/")
    label = f"{parts[4]}/{parts[-1]}" if "github.com" in url and len(parts) > 5 else parts[-1]
    return f"[{label}]({url})"


def _size(nbytes) -> str:
    return "-" if nbytes is None else fmt_gb_gib(nbytes)


def explanation(row: dict) -> str:
    """What the report says of a row's gap: the status where nothing was measured; within 2 %; the
    established cause (and the error after its terms); or "cause not established"."""
    if row["status"] == "not reproduced yet":
        return f"not reproduced yet: needs {row['needs']}"
    if row["status"] == "error":
        return f"error: {row['error']}"
    if row["status"] != "reproduced":
        return row["status"]
    within = abs(row["rel_error"]) <= TOLERANCE
    if within and not row["cause"]:
        return "within 2 %"
    if not row["cause"]:
        return "cause not established"
    if within:
        return "within 2 %; the rest, as read: " + explanation({**row, "rel_error": 1.0})
    after = row.get("rel_error_after_terms")
    if after is None:
        return row["cause"]
    at = row.get("terms_at", "")
    base = {"": "Ours", "forward": "Our forward's peak", "weights": "Our weights"}[at]
    base += f" ({_size(row['terms_added_to_bytes'])})" if at else ""
    return row["cause"] + f" {base} + the terms: {_size(row['ours_plus_terms_bytes'])}, {fmt_rel(after)}."


def header(rows: list[dict], hw: dict, command: str) -> list[str]:
    """What produced the report, at which commit and when, on which machine and versions."""
    from collections import Counter

    from verify.provenance import fingerprint, git_commit

    when = sorted(r["measured_at"] for r in rows if r.get("measured_at"))
    commits = Counter(r["commit"] for r in rows if r.get("commit") and not r.get("stale"))
    return [
        f"- command: `{command}`",
        f"- code: commit {git_commit()} writing the report; rows measured at "
        + ", ".join(f"{k} ({v} rows)" for k, v in commits.items()),
        f"- measured: {when[0]} to {when[-1]} (UTC)" if when else "- measured: nothing yet",
        f"- fingerprint of this code, versions and hardware: {fingerprint(hw)}",
        "- GPU: none; every 'ours' figure is a fake-tensor trace on the CPU (verify.measure.fake), made when the "
        "report was written",
        f"- machine: {hw['cpu']}, {hw['cpu_cores']} cores, {fmt_bytes(hw['host_memory_bytes'], 'GiB', 1)} host memory",
        f"- versions: Python {hw['python']}, torch {hw['torch']}, transformers {hw['transformers']}",
        "- units: GB = 10^9 bytes, GiB = 2^30 bytes; 'published' is converted from the unit of the code that printed "
        "it; error = (ours − published) / published",
    ]


def markdown(rows: list[dict], hw: dict, command: str) -> str:
    from tabulate import tabulate

    out = ["# GPU memory figures published by others, against the fake backend", ""]
    out += header(rows, hw, command)
    reproduced = [r for r in rows if r["status"] == "reproduced"]
    within = sum(abs(r["rel_error"]) <= TOLERANCE for r in reproduced)
    waiting = [r for r in rows if r["status"] == "not reproduced yet"]
    out += ["", f"{len(rows)} figures: {len(reproduced)} reproduced ({within} within 2 %), {len(waiting)} waiting for a "
            "backend feature, " + f"{sum(r['status'] == 'error' for r in rows)} errors.", ""]
    table = [(r["id"] + (" (stale)" if r.get("stale") else ""), _link(r["source"]), r["gpu"].split(" (")[0],
              r["api"].split(" (")[0],
              f"{r['published']} {r['published_unit']} = {_size(r['published_bytes'])}", _size(r["ours_bytes"]),
              fmt_rel(r["rel_error"]), explanation(r)) for r in rows]
    out += [tabulate(table, headers=["id", "source", "GPU", "API", "published", "ours (fake)", "error", "cause"],
                     tablefmt="github"), ""]
    if waiting:
        out += ["## Waiting for backend features", "",
                tabulate([(r["id"], r["needs"]) for r in waiting], headers=["id", "needs"], tablefmt="github"), ""]
    out += ["## Each figure", ""]
    for r in rows:
        spec = " ".join(f"{k}={v}" for k, v in r["spec"].items())
        out += [f"### {r['id']}", "",
                f"- published: {r['published']} {r['published_unit']} = {r['published_bytes']:,} bytes; "
                f"quote: `{r['quote']}`",
                f"- where: {r['where']} ({r['source']})",
                f"- GPU: {r['gpu']}; API: {r['api']}; versions: {r['versions']}",
                f"- covers: {r['covers']}; compared with our {r['compare']} bytes",
                f"- settings: {spec}"]
        if r["setup"]:
            out.append(f"- setup: {r['setup']}")
        if r["status"] == "reproduced":
            d = r["ours_detail"]
            out.append(f"- ours: {r['ours_bytes']:,} bytes ({fmt_rel(r['rel_error'])}); peak {d['peak_bytes']:,} in "
                       f"{d['peak_phase']}; weights {d['params_bytes']:,}, grads {d['grads_bytes']:,}, optimizer "
                       f"{d['optimizer_bytes']:,}, KV cache {d['kv_cache_bytes']:,}; measured {r['measured_at']} at "
                       f"{r['commit']} in {r['seconds']} s")
        out += [f"- verdict: {explanation(r)}", ""]
    return "\n".join(out)


def read_rows(path: Path) -> list[dict]:
    """The rows of a written external.json (none if there is no file)."""
    import json

    return json.loads(path.read_text()).get("rows", []) if path.exists() else []


def write(out_dir: Path | None = None, only: str | None = None, figures: list[Figure] | None = None,
          progress: Callable[[int, int, dict, bool], None] | None = None,
          command: str = "python -m verify external") -> tuple[list[dict], list[Path]]:
    """Reproduce the figures `only` names (all by default) and write EXTERNAL.md and external.json
    for the whole catalogue: figures not run now keep the previous report's row, marked stale when
    other code made it. Rows go to external.jsonl as they come; a complete run removes it."""
    import json

    from verify.provenance import ROOT, fingerprint, hardware

    hw = hardware()
    fp = fingerprint(hw)
    figures = catalogue() if figures is None else figures
    select(only, figures)  # an unknown id fails before anything is written
    out_dir = Path(out_dir) if out_dir else ROOT / "reports" / "external"
    out_dir.mkdir(parents=True, exist_ok=True)
    jsonl = out_dir / "external.jsonl"
    now = {r["id"]: r for r in run(only=only, figures=figures, jsonl=jsonl, progress=progress)}
    before = {r["id"]: r for r in read_rows(out_dir / "external.json")}
    rows = []
    for f in figures:
        if f.id in now:
            rows.append(now[f.id])
        elif f.id in before:
            rows.append({**before[f.id], "stale": before[f.id].get("fingerprint") != fp})
        else:  # never run here: what a run would say without measuring
            rows.append({**f.as_dict(), "status": "not reproduced yet" if f.needs else "not measured yet",
                         "ours_bytes": None, "rel_error": None})
    (out_dir / "external.json").write_text(json.dumps({"hardware": hw, "command": command, "fingerprint": fp,
                                                       "rows": rows}, indent=2, default=str) + "\n")
    (out_dir / "EXTERNAL.md").write_text(markdown(rows, hw, command))
    jsonl.unlink(missing_ok=True)
    return rows, [out_dir / "EXTERNAL.md", out_dir / "external.json"]

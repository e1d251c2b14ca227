"""One registry of architecture families: for each, the transformers model_types it covers, what
its blocks hold (read from a config into Shape fields), its exact parameter count as named
terms, the bytes of its buffers, and its activation terms for the corrected predictor where
they are derived (training), and the candidate peaks of a greedy generation and of a no-grad
forward (generation.py holds the pieces every family shares).

One module per family (llama.py, gpt2.py, ...) holds these as plain functions of a transformers
config or a Shape (verify.configs.Shape); nothing here imports torch. A model_type no family
covers still gets a Shape (the sizes every config has; the family fields None) and an exact
count by introspection (verify/measure/params.py), but no closed form and no prediction.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from verify.families import bloom, falcon, gemma, gpt2, gpt_bigcode, gpt_neox, gptj, llama, mixtral, opt, phi
from verify.families.tape import Training


@dataclass(frozen=True)
class Family:
    """An architecture family: model_types whose modules share one block layout."""

    name: str  # short name, the Shape's `family` ("llama", "opt", ...)
    label: str  # how messages name it ("the LLaMA family", "GPT-2")
    model_types: tuple[str, ...]  # the transformers model_types it covers
    fields: Callable  # config -> the Shape fields its blocks decide (and the generic sizes it reads its own way)
    params: Callable  # Shape -> exact parameter count as named terms (dict of ints)
    buffers: Callable  # (Shape, p bytes of the weights' dtype) -> bytes of the module's buffers (RoPE tables, masks)
    training: Training | None = None  # what its training step keeps and frees, block by block (tape.py); None: not derived
    # generation and the no-grad forward (generation.py: moment name -> named terms in bytes beyond the weights)
    generation_moments: Callable | None = None  # (Shape, MemorySpec) -> the candidate peaks of a greedy generation; None: not derived
    forward_moments: Callable | None = None  # (Shape, MemorySpec) -> the candidate peaks of one no-grad forward; None: not derived
    inference_gaps: Callable | None = None  # (Shape, MemorySpec) -> why those moments do not reach a run, or None


FAMILIES = (
    Family("llama", "the LLaMA family", llama.MODEL_TYPES, llama.fields, llama.params, llama.buffers, llama.TRAINING,
           generation_moments=llama.generation_moments, forward_moments=llama.forward_moments),
    Family("gpt2", "GPT-2", gpt2.MODEL_TYPES, gpt2.fields, gpt2.params, gpt2.buffers, gpt2.TRAINING,
           generation_moments=gpt2.generation_moments, forward_moments=gpt2.forward_moments),
    Family("mixtral", "Mixtral", mixtral.MODEL_TYPES, mixtral.fields, mixtral.params, mixtral.buffers, mixtral.TRAINING),
    Family("bloom", "BLOOM", bloom.MODEL_TYPES, bloom.fields, bloom.params, bloom.buffers, bloom.TRAINING),
    Family("opt", "OPT", opt.MODEL_TYPES, opt.fields, opt.params, opt.buffers, opt.TRAINING),
    Family("gptj", "GPT-J", gptj.MODEL_TYPES, gptj.fields, gptj.params, gptj.buffers, gptj.TRAINING),
    Family("gpt_neox", "GPT-NeoX", gpt_neox.MODEL_TYPES, gpt_neox.fields, gpt_neox.params, gpt_neox.buffers,
           gpt_neox.TRAINING),
    Family("falcon", "Falcon", falcon.MODEL_TYPES, falcon.fields, falcon.params, falcon.buffers, falcon.TRAINING,
           generation_moments=falcon.generation_moments, forward_moments=falcon.forward_moments, inference_gaps=falcon.inference_gaps),
    Family("gpt_bigcode", "GPT-BigCode", gpt_bigcode.MODEL_TYPES, gpt_bigcode.fields, gpt_bigcode.params,
           gpt_bigcode.buffers, gpt_bigcode.TRAINING,
           generation_moments=gpt_bigcode.generation_moments, forward_moments=gpt_bigcode.forward_moments),
    Family("phi", "Phi", phi.MODEL_TYPES, phi.fields, phi.params, phi.buffers),
    Family("gemma", "Gemma", gemma.MODEL_TYPES, gemma.fields, gemma.params, gemma.buffers,
           generation_moments=gemma.generation_moments, forward_moments=gemma.forward_moments),
)


def family_of(model_type: str) -> Family | None:
    """The family covering a transformers model_type, or None if the registry has none."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    return None


def not_in_registry(model_type: str) -> str:
    """What the tool says about a model_type no family covers."""
    return (f"family {model_type} is not in the registry: counts are by introspection alone "
            "(no closed form, no seed formulas, no prediction)")

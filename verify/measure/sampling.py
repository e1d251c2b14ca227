"""Sampling measured on real logits of a tiny model (S1-S4): transformers' logits processors
(temperature, top-k, top-p), the order generate() applies them in, their edge cases, and the
frequencies generate() really samples."""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass

import torch

ORDER_NAMES = ("temperature", "top_k", "top_p")


@dataclass(frozen=True)
class SamplingSpec:
    """Where the logits come from and which settings are measured."""

    model: str = "tiny-llama"  # bundled config, randomly initialised with `seed`
    seed: int = 0  # torch seed for the weights, the prompt and the sampling
    prompt_len: int = 8  # tokens of the random prompt; the logits are those of its next token
    temperature: float = 0.8  # the seed's example: T = 0.8
    top_k: int = 36  # the seed's example: K = 36
    top_p: float = 0.7  # the seed's example: P = 0.7
    samples: int = 4000  # first tokens drawn by generate() for the frequency test


def model_and_prompt(spec: SamplingSpec):
    """The tiny model (eval mode) and a random prompt of shape (1, prompt_len)."""
    from verify.build import build
    from verify.configs import load_config

    torch.manual_seed(spec.seed)
    model = build(load_config(spec.model), device="cpu").eval()
    prompt = torch.randint(0, model.config.vocab_size, (1, spec.prompt_len))
    return model, prompt


@torch.no_grad()
def next_token_logits(model, prompt: torch.Tensor) -> torch.Tensor:
    """Raw logits of the next token, shape (1, V), float32."""
    return model(prompt).logits[:, -1, :].float()


def warpers(temperature: float, top_k: int, top_p: float) -> dict:
    from transformers.generation.logits_process import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    return {"temperature": TemperatureLogitsWarper(float(temperature)), "top_k": TopKLogitsWarper(top_k),
            "top_p": TopPLogitsWarper(top_p)}


def apply(order: tuple[str, ...], logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """The named processors applied to `logits` in `order`."""
    w = warpers(temperature, top_k, top_p)
    scores = logits.clone()
    for name in order:
        scores = w[name](None, scores)
    return scores


def kept(scores: torch.Tensor) -> list[int]:
    """Token ids a processed (1, V) score row keeps (finite scores), ascending."""
    return torch.isfinite(scores[0]).nonzero().flatten().tolist()


def entropy(scores: torch.Tensor) -> float:
    """Entropy in nats of softmax(scores) for one row."""
    p = torch.softmax(scores[0].double(), dim=-1)
    return float(-(p[p > 0] * p[p > 0].log()).sum())


def entropy_vs_temperature(logits: torch.Tensor, temperatures: tuple[float, ...]) -> dict[float, float]:
    """S1: entropy of softmax(TemperatureLogitsWarper(T)(logits)) for each T."""
    from transformers.generation.logits_process import TemperatureLogitsWarper

    return {t: entropy(TemperatureLogitsWarper(float(t))(None, logits.clone())) for t in temperatures}


def temperature_divides(logits: torch.Tensor, temperature: float) -> bool:
    """S1: TemperatureLogitsWarper's output equals logits / T exactly."""
    from transformers.generation.logits_process import TemperatureLogitsWarper

    return torch.equal(TemperatureLogitsWarper(float(temperature))(None, logits.clone()), logits / temperature)


@torch.no_grad()
def generate_scores(model, prompt: torch.Tensor, spec: SamplingSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """One sampled step of generate() with the spec's T, K, P: the raw logits and the processed
    scores it returns (output_logits / output_scores)."""
    out = model.generate(
        prompt, attention_mask=torch.ones_like(prompt), do_sample=True, temperature=spec.temperature,
        top_k=spec.top_k, top_p=spec.top_p, max_new_tokens=1, pad_token_id=0, output_scores=True,
        output_logits=True, return_dict_in_generate=True,
    )
    return out.logits[0].float(), out.scores[0].float()


def generate_order(model, prompt: torch.Tensor, spec: SamplingSpec) -> dict:
    """S4: which orders of (temperature, top_k, top_p) reproduce exactly the scores generate()
    returns, and the processors' classes in the order generate() builds them."""
    raw, processed = generate_scores(model, prompt, spec)
    matches = [order for order in itertools.permutations(ORDER_NAMES)
               if torch.equal(apply(order, raw, spec.temperature, spec.top_k, spec.top_p), processed)]
    g = copy.deepcopy(model.generation_config)
    g.update(do_sample=True, temperature=spec.temperature, top_k=spec.top_k, top_p=spec.top_p)
    try:  # a private helper of generate(): the list it builds for these settings
        built = [type(p).__name__ for p in model._get_logits_processor(generation_config=g, input_ids_seq_length=prompt.shape[1])]
    except (AttributeError, TypeError) as e:
        built = [f"unavailable: {e}"]
    return {"orders_reproducing_generate": [list(o) for o in matches], "generate_processors": built,
            "kept_by_generate": len(kept(processed)), "raw": raw, "processed": processed}


def order_effect(logits: torch.Tensor, spec: SamplingSpec) -> dict[str, int]:
    """S4: the size of the kept set for every order of the three processors."""
    return {" > ".join(o): len(kept(apply(o, logits, spec.temperature, spec.top_k, spec.top_p)))
            for o in itertools.permutations(ORDER_NAMES)}


def top_p_edges(logits: torch.Tensor) -> dict:
    """S3 edge cases of TopPLogitsWarper on real logits: P = 0, P = 1, out-of-range P, and ties
    at the cut (the last kept token's probability shared by the next one)."""
    from transformers.generation.logits_process import TopPLogitsWarper

    V = logits.shape[-1]
    p0 = kept(TopPLogitsWarper(0.0)(None, logits.clone()))
    p1 = kept(TopPLogitsWarper(1.0)(None, logits.clone()))
    try:
        TopPLogitsWarper(1.5)
        out_of_range = "accepted"
    except ValueError as e:
        out_of_range = f"ValueError: {e}"
    # ties: four tokens of equal top logit; P = 0.3 of their 4 × 0.25 mass falls inside the tie
    tied = torch.full((1, 8), -5.0)
    tied[0, [1, 3, 4, 6]] = 5.0
    tie_kept = kept(TopPLogitsWarper(0.3)(None, tied))
    return {"V": V, "P=0 kept": len(p0), "P=0 keeps argmax": p0 == [int(logits.argmax())],
            "P=1 kept": len(p1), "P=1.5": out_of_range,
            "ties: 4 tokens at p=0.25 each, P=0.3, kept": tie_kept}


def top_k_edges(logits: torch.Tensor, top_k: int) -> dict:
    """S2 edge cases of TopKLogitsWarper on real logits: K = the spec's K, K larger than V, and a
    tie at the K-th value (the (K+1)-th logit set equal to the K-th)."""
    from transformers.generation.logits_process import TopKLogitsWarper

    V = logits.shape[-1]
    plain = kept(TopKLogitsWarper(top_k)(None, logits.clone()))
    top = torch.topk(logits[0], top_k + 1).indices
    is_top = sorted(plain) == sorted(top[:top_k].tolist())
    tied = logits.clone()
    tied[0, top[top_k]] = tied[0, top[top_k - 1]]
    tie_kept = len(kept(TopKLogitsWarper(top_k)(None, tied)))
    big = len(kept(TopKLogitsWarper(V + 100)(None, logits.clone())))
    try:
        TopKLogitsWarper(0)
        zero = "accepted"
    except ValueError as e:
        zero = f"ValueError: {e}"
    return {"V": V, "K": top_k, "kept": len(plain), "kept are the K largest": is_top,
            "tie at the K-th value, kept": tie_kept, f"K={V + 100} > V, kept": big, "K=0": zero}


@torch.no_grad()
def sample_frequencies(model, prompt: torch.Tensor, spec: SamplingSpec) -> dict:
    """S4: draw `samples` first tokens with generate() (T, K, P of the spec, fixed seed) and compare
    their frequencies with softmax of the processed scores (the renormalized kept set): Pearson's
    chi-square over the kept tokens, its p-value, the largest |frequency - probability|, and how
    many samples fell outside the kept set."""
    _, processed = generate_scores(model, prompt, spec)
    probs = torch.softmax(processed[0].double(), dim=-1)
    torch.manual_seed(spec.seed)
    batch = prompt.expand(spec.samples, -1)
    out = model.generate(batch, attention_mask=torch.ones_like(batch), do_sample=True, temperature=spec.temperature,
                         top_k=spec.top_k, top_p=spec.top_p, max_new_tokens=1, pad_token_id=0)
    tokens = out[:, -1]
    counts = torch.bincount(tokens, minlength=probs.numel()).double()
    keep = probs > 0
    expected = probs[keep] * spec.samples
    chi2 = float(((counts[keep] - expected) ** 2 / expected).sum())
    dof = int(keep.sum()) - 1
    p_value = float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(chi2 / 2, dtype=torch.float64)))
    return {"samples": spec.samples, "kept tokens": int(keep.sum()), "outside kept set": int(counts[~keep].sum()),
            "chi2": chi2, "dof": dof, "p_value": p_value,
            "max |freq - p|": float((counts / spec.samples - probs).abs().max())}


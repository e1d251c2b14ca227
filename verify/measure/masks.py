"""Padding and attention_mask on real tiny models (A1): the logits of each sequence run alone
against its logits inside a padded batch, left and right padding, with and without the mask."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class MaskSpec:
    """The padded batch measured."""

    model: str  # bundled config, randomly initialised
    lengths: tuple[int, ...] = (9, 5, 2)  # real tokens of each sequence; the batch pads to the longest
    pad_id: int = 0  # token id written in the padding
    seed: int = 0  # torch seed for weights and tokens
    attn: str | None = None  # attention implementation: eager | sdpa | None (the model's default)


def _position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only (what generate() passes with left padding)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


@torch.no_grad()
def padded_vs_alone(spec: MaskSpec) -> dict:
    """Max |Δlogit| over real tokens between each sequence alone and the padded batch, for
    right and left padding, with the mask, without it, and (left) with positions from the mask."""
    from verify.build import build
    from verify.configs import load_config

    torch.manual_seed(spec.seed)
    model = build(load_config(spec.model), device="cpu", attn=spec.attn).eval()
    V = model.config.vocab_size
    seqs = [torch.randint(1, V, (n,)) for n in spec.lengths]
    alone = [model(s[None]).logits[0] for s in seqs]
    longest = max(spec.lengths)
    out: dict[str, float] = {}
    for side in ("right", "left"):
        ids = torch.full((len(seqs), longest), spec.pad_id)
        mask = torch.zeros((len(seqs), longest), dtype=torch.long)
        where = []
        for i, s in enumerate(seqs):
            sl = slice(0, len(s)) if side == "right" else slice(longest - len(s), longest)
            ids[i, sl], mask[i, sl] = s, 1
            where.append(sl)
        runs = {"with mask": dict(attention_mask=mask), "no mask": {}}
        if side == "left":
            runs["with mask and positions"] = dict(attention_mask=mask, position_ids=_position_ids(mask))
        for label, kwargs in runs.items():
            logits = model(ids, **kwargs).logits
            out[f"{side} padding, {label}"] = max(float((logits[i, sl] - alone[i]).abs().max()) for i, sl in enumerate(where))
    out["logit scale (max |logit| alone)"] = max(float(a.abs().max()) for a in alone)
    return out

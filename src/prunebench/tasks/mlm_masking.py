"""BERT-style token masking for masked-language modelling, driven by an explicit generator."""

from __future__ import annotations

import torch

from prunebench.models.batch import IGNORE_INDEX, Batch
from prunebench.tasks.tokenizer import FIRST_REGULAR_ID, MASK_ID

MASK_PROB = 0.15
#: Of the selected positions: 80% become [MASK], 10% a random token, 10% stay as they are.
REPLACE_MASK, REPLACE_RANDOM = 0.8, 0.1


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    vocab_size: int,
    generator: torch.Generator,
    *,
    mask_prob: float = MASK_PROB,
    all_mask: bool = False,
) -> Batch:
    """Select ``mask_prob`` of the regular tokens and corrupt them; return a labelled MLM batch.

    Args:
        input_ids: [B, S] clean token ids.
        attention_mask: [B, S] 1 for real tokens, 0 for padding.
        vocab_size: ids drawn as random replacements lie in [FIRST_REGULAR_ID, vocab_size).
        generator: the only source of randomness, so a seed fixes the masking exactly.
        mask_prob: fraction of regular (non-special, non-pad) tokens selected.
        all_mask: replace every selected token by [MASK] (evaluation) instead of 80/10/10 (training).

    Returns:
        ``{"input_ids", "attention_mask", "labels"}``; labels hold the original id at selected positions
        and -100 elsewhere. Every row with a regular token gets at least one selected position, so a batch
        always has a loss.
    """
    regular = (input_ids >= FIRST_REGULAR_ID) & attention_mask.bool()  # [B, S]
    u = torch.rand(input_ids.shape, generator=generator)  # [B, S]
    selected = (u < mask_prob) & regular  # [B, S]
    # A row with nothing selected would contribute no loss; pick its regular token with the smallest draw.
    empty = ~selected.any(dim=1) & regular.any(dim=1)  # [B]
    if empty.any():
        first = torch.where(regular, u, torch.full_like(u, 2.0)).argmin(dim=1)  # [B]
        rows = empty.nonzero(as_tuple=True)[0]
        selected[rows, first[rows]] = True
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))  # [B, S]
    corrupted = input_ids.clone()
    if all_mask:
        corrupted[selected] = MASK_ID
    else:
        r = torch.rand(input_ids.shape, generator=generator)  # [B, S]
        to_mask = selected & (r < REPLACE_MASK)
        to_random = selected & (r >= REPLACE_MASK) & (r < REPLACE_MASK + REPLACE_RANDOM)
        random_ids = torch.randint(FIRST_REGULAR_ID, vocab_size, input_ids.shape, generator=generator)  # [B, S]
        corrupted[to_mask] = MASK_ID
        corrupted[to_random] = random_ids[to_random]
    return {"input_ids": corrupted, "attention_mask": attention_mask.clone(), "labels": labels}

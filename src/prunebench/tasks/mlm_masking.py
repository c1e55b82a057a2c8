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
    mask_id: int = MASK_ID,
    maskable: torch.Tensor | None = None,
) -> Batch:
    """Select ``mask_prob`` of the regular tokens and corrupt them; return a labelled MLM batch.

    The one masking of masked-language modelling: the built-in task (training and evaluation) and the
    Hugging Face runs (evaluation rows, distillation and calibration batches, through their tokenizer's
    special ids and mask token) all call it.

    Args:
        input_ids: [B, S] clean token ids.
        attention_mask: [B, S] 1 for real tokens, 0 for padding.
        vocab_size: ids drawn as random replacements lie in [FIRST_REGULAR_ID, vocab_size).
        generator: the only source of randomness, so a seed fixes the masking exactly.
        mask_prob: fraction of regular (non-special, non-pad) tokens selected.
        all_mask: replace every selected token by the mask token (evaluation) instead of 80/10/10 (training).
        mask_id: the mask token (default: prunebench's tokenizer's ``[MASK]``).
        maskable: [B, S] bool, the tokens that may be selected, for another tokenizer (e.g. not one of an
            HF tokenizer's special ids); default: prunebench's regular ids (``>= FIRST_REGULAR_ID``).
            Padding is never selected. Random replacements assume prunebench's id layout, so with
            ``maskable`` only ``all_mask`` masking is offered.

    Returns:
        ``{"input_ids", "attention_mask", "labels"}``; labels hold the original id at selected positions
        and -100 elsewhere. Every row with a regular token gets at least one selected position, so a batch
        always has a loss (a batch of short rows with nothing selected would give a NaN cross-entropy).

    Raises:
        ValueError: ``maskable`` with 80/10/10 masking.
    """
    if maskable is not None and not all_mask:
        raise ValueError("80/10/10 masking draws prunebench token ids; with another tokenizer's maskable "
                         "tokens use all_mask=True")
    regular = (input_ids >= FIRST_REGULAR_ID) if maskable is None else maskable.bool()  # [B, S]
    regular = regular & attention_mask.bool()  # [B, S]
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
        corrupted[selected] = mask_id
    else:
        r = torch.rand(input_ids.shape, generator=generator)  # [B, S]
        to_mask = selected & (r < REPLACE_MASK)
        to_random = selected & (r >= REPLACE_MASK) & (r < REPLACE_MASK + REPLACE_RANDOM)
        random_ids = torch.randint(FIRST_REGULAR_ID, vocab_size, input_ids.shape, generator=generator)  # [B, S]
        corrupted[to_mask] = mask_id
        corrupted[to_random] = random_ids[to_random]
    return {"input_ids": corrupted, "attention_mask": attention_mask.clone(), "labels": labels}

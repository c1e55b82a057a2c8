"""tap_linears: the one hook mechanism the refit, the OBS orders and the activation criterion read activations by."""

from __future__ import annotations

import pytest
import torch

from prunebench.models.adapters import adapter_for
from prunebench.pruning.calibration import tap_linears


def test_rows_are_the_real_tokens_only_and_match_an_unpadded_forward(tiny_model):
    lin = adapter_for(tiny_model).output_linear("neurons", 0)
    tiny_model.train()  # the tap must run in eval mode (no dropout) and give the mode back
    was = tiny_model.training
    ids = torch.randint(1, tiny_model.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]])
    got: list[torch.Tensor] = []
    tap_linears(tiny_model, {"x": lin}, [{"input_ids": ids, "attention_mask": mask}], lambda _, r: got.append(r))
    assert got[0].shape == (10, lin.in_features)  # 4 + 6 real tokens, the 2 pads dropped
    alone: list[torch.Tensor] = []
    tap_linears(tiny_model, {"x": lin}, [{"input_ids": ids[:1, :4]}], lambda _, r: alone.append(r), what="in")
    assert torch.allclose(got[0][:4], alone[0], atol=1e-5)  # the padded sequence's real rows are its own
    outs: list[torch.Tensor] = []
    tap_linears(tiny_model, {"x": lin}, [{"input_ids": ids[:1, :4]}], lambda _, r: outs.append(r), what="out")
    assert torch.allclose(outs[0], lin(alone[0]), atol=1e-5)
    assert tiny_model.training is was and not lin._forward_hooks  # its mode restored, no hook left behind


def test_bad_arguments_are_one_line_errors(tiny_model):
    adapter = adapter_for(tiny_model)
    lins = {0: adapter.output_linear("heads", 0), 1: adapter.output_linear("heads", 1)}
    batch = [{"input_ids": torch.ones(1, 3, dtype=torch.long)}]
    with pytest.raises(ValueError, match="exactly one Linear"):
        tap_linears(tiny_model, lins, batch, lambda *_: None, stop=True)
    with pytest.raises(ValueError, match="'in' or 'out'"):
        tap_linears(tiny_model, lins, batch, lambda *_: None, what="input")

"""Greedy k-center continued from an existing bank (``memory.continued_kcenter``), which bounds
what learning on the line adds to a bank."""

from __future__ import annotations

import torch

from dualpatch.bank.memory import continued_kcenter


def test_first_pick_is_the_new_row_farthest_from_the_bank():
    gen = torch.Generator().manual_seed(0)
    bank, new = torch.randn(50, 8, generator=gen), torch.randn(30, 8, generator=gen) * 3
    picks = continued_kcenter(bank, new, 5, projection_dim=None)
    nearest = torch.cdist(new, bank).min(1).values
    assert int(picks[0]) == int(nearest.argmax())
    # each later pick is the row farthest from the bank and the picks before it
    for k in range(1, len(picks)):
        centres = torch.cat([bank, new[picks[:k]]])
        assert int(picks[k]) == int(torch.cdist(new, centres).min(1).values.argmax())


def test_rows_already_in_the_bank_are_never_picked():
    gen = torch.Generator().manual_seed(1)
    bank = torch.randn(40, 8, generator=gen)
    new = torch.cat([bank[:10], torch.randn(2, 8, generator=gen) * 5])
    picks = continued_kcenter(bank, new, 6, projection_dim=None)
    assert sorted(picks.tolist()) == [10, 11]  # only the two new rows, however big the budget
    assert continued_kcenter(bank, bank[:10], 6, projection_dim=None).numel() == 0


def test_budget_and_determinism():
    gen = torch.Generator().manual_seed(2)
    bank, new = torch.randn(60, 200, generator=gen), torch.randn(80, 200, generator=gen)
    a = continued_kcenter(bank, new, 7, projection_dim=16, seed=3)
    assert len(a) == 7 and len(set(a.tolist())) == 7
    assert torch.equal(a, continued_kcenter(bank, new, 7, projection_dim=16, seed=3))
    assert continued_kcenter(bank, new, 0).numel() == 0

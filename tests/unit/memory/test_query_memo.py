"""query_memo.remembered_queries: a repeated k-NN query returns the first answer, without searching,
and only when the bank's and the rows' values are the same."""

from __future__ import annotations

import torch

from dualpatch.bank import query_memo
from dualpatch.bank.memory import MemoryBank
from dualpatch.bank.query_memo import remembered_queries


def _bank(seed: int) -> MemoryBank:
    bank = MemoryBank(coreset_ratio=1.0, min_size=1)
    bank.bank_ = torch.randn(50, 8, generator=torch.Generator().manual_seed(seed))
    return bank


def test_repeated_query_is_answered_from_memory(monkeypatch):
    bank, rows = _bank(0), torch.randn(30, 8, generator=torch.Generator().manual_seed(1))
    plain = bank.query(rows, 3)
    calls = []
    search = MemoryBank._search
    monkeypatch.setattr(
        MemoryBank, "_search", lambda self, f, k: calls.append(k) or search(self, f, k)
    )
    with remembered_queries():
        first = bank.query(rows, 3)
        again = _bank(0).query(rows.clone(), 3)  # another bank object with the same values
        assert len(calls) == 1
        assert torch.equal(first[0], plain[0]) and torch.equal(first[1], plain[1])
        assert torch.equal(again[0], plain[0]) and torch.equal(again[1], plain[1])
        again[0].zero_()  # the caller's copy: the remembered answer is not changed
        assert torch.equal(bank.query(rows, 3)[0], plain[0])
        _bank(1).query(rows, 3)  # other bank values: searched
        bank.query(rows + 1e-3, 3)  # other rows: searched
        bank.query(rows, 2)  # other k: searched
        assert len(calls) == 4
    bank.query(rows, 3)  # outside the block nothing is remembered
    assert len(calls) == 5


def test_memory_is_bounded():
    bank = _bank(0)
    with remembered_queries(max_bytes=1):
        for seed in range(3):
            bank.query(torch.randn(4, 8, generator=torch.Generator().manual_seed(seed)), 1)
        assert len(query_memo.active()) == 1  # only the latest answer kept
    assert query_memo.active() is None

"""Remembered nearest-neighbour queries: inside ``remembered_queries()``, a bank queried again by
the same rows with the same ``k`` answers from memory instead of searching again.

For comparing many defect banks beside one normal bank (few-shot draws, synthetic sources): the
normal bank's distances of the same training and test patches are searched once. Keys are digests
of the bank's and the rows' values, so the answer is the one a search would give."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

#: the answers kept (least recently used dropped beyond this many bytes)
QUERY_MEMO_BYTES = 1 << 30


class QueryMemo(OrderedDict):
    """Answers by key, least recently used first, with their total size in bytes."""

    def __init__(self, max_bytes: int):
        super().__init__()
        self.max_bytes, self.size = max_bytes, 0


_ACTIVE: QueryMemo | None = None


def active() -> QueryMemo | None:
    """The memo of the innermost ``remembered_queries`` block, or None outside one."""
    return _ACTIVE


@contextmanager
def remembered_queries(max_bytes: int = QUERY_MEMO_BYTES) -> Iterator[None]:
    """Inside this block, a query of a bank with the same values, by the same rows, with the same
    ``k`` returns the answer found the first time (a copy) instead of searching again."""
    global _ACTIVE
    outer = _ACTIVE
    if outer is None:
        _ACTIVE = QueryMemo(max_bytes)
    try:
        yield
    finally:
        _ACTIVE = outer


def values_digest(t: torch.Tensor) -> str:
    return hashlib.blake2b(
        t.detach().contiguous().cpu().numpy().tobytes(), digest_size=20
    ).hexdigest()


def _nbytes(tensors: tuple[torch.Tensor, ...]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def answer(
    memo: QueryMemo, key: tuple, search: Callable[[], tuple[torch.Tensor, ...]]
) -> tuple[torch.Tensor, ...]:
    """The remembered answer to ``key`` (a copy), else ``search()``'s, remembered."""
    if key in memo:
        memo.move_to_end(key)
        return tuple(t.clone() for t in memo[key])
    found = search()
    memo[key] = tuple(t.clone() for t in found)
    memo.size += _nbytes(memo[key])
    while memo.size > memo.max_bytes and len(memo) > 1:
        memo.size -= _nbytes(memo.popitem(last=False)[1])
    return found

"""Checks of an estimator's parameters that ``fit`` (and ``load``) run before any work: settings
that could otherwise only fail after minutes of feature extraction."""

from __future__ import annotations

from typing import Any

from dualpatch.errors import ConfigError
from dualpatch.scoring import check_scoring


def check_scoring_params(model: Any) -> None:
    """ConfigError unless ``model``'s scoring parameters are usable together (the dual rule, if
    any, re-weighting and the neighbour counts)."""
    rule = getattr(model, "rule", None)
    check_scoring(rule, model.reweight, model.num_neighbors, model.reweight_neighbors)
    check_search(model)


def check_large_data(model: Any) -> None:
    """ConfigError for a large-data setting (coreset method, knn backend, ``max_memory``) that
    could only fail after minutes of work; a missing faiss is found now, not when the fit ends."""
    from dualpatch.bank.memory import CORESETS
    from dualpatch.bank.neighbours import require_faiss
    from dualpatch.bank.spill import parse_size
    from dualpatch.defaults import KNN_METHODS

    if model.coreset_method not in CORESETS:
        raise ConfigError(
            f"unknown coreset_method {model.coreset_method!r} (choose from {', '.join(CORESETS)})"
        )
    if model.knn not in KNN_METHODS:
        raise ConfigError(f"unknown knn {model.knn!r} (choose from {', '.join(KNN_METHODS)})")
    if model.knn.startswith("faiss"):
        require_faiss(model.knn)
    if model.max_memory is not None:
        parse_size(model.max_memory)
    check_search(model)


def check_search(model: Any) -> None:
    """ConfigError unless the search settings (``coreset_rows``, ``bank_dtype``, ``search_dim``)
    are usable: checked before the fit's minutes of work, and at load."""
    from dualpatch.defaults import BANK_DTYPES

    for name in ("coreset_rows", "search_dim"):
        value = getattr(model, name, None)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int) or value < 1
        ):
            raise ConfigError(
                f"{name} is {value!r}; expected a whole number of at least 1, or null"
            )
    dtype = getattr(model, "bank_dtype", "float32")
    if dtype not in BANK_DTYPES:
        raise ConfigError(f"unknown bank_dtype {dtype!r} (choose from {', '.join(BANK_DTYPES)})")
    if getattr(model, "search_dim", None) and getattr(model, "knn", "torch") != "torch":
        raise ConfigError(
            f"search_dim ranks in the torch search only; knn {model.knn!r} searches all dims "
            "(set knn to torch or search_dim to null)"
        )

"""Synthetic defects in feature space: no images, no training, only the defect bank's own rows.

The baseline any pixel-space generator has to beat. Each new row starts at a real defect-patch
feature and moves by up to ``strength`` of the way towards something:

- ``noise``: Gaussian noise, per dimension ``strength`` x the defect features' spread there;
- ``interpolate``: another real defect feature (mixup with weight U(0, strength));
- ``toward_normal``: the nearest normal-bank feature (weight U(0, strength)): defects shading into
  surface, as faint and small defects do.

Settings are one dict, the same in the estimator and in configs:
``{"method": "interpolate", "n": 1000, "strength": 0.5}``; ``n`` (rows added) defaults to as many
as there are real defect rows, ``strength`` to 0.5.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from dualpatch.errors import ConfigError

METHODS = ("noise", "interpolate", "toward_normal")
KEYS = ("method", "n", "strength")
DEFAULT_STRENGTH = 0.5


def check_settings(settings: Mapping[str, Any]) -> tuple[str, int | None, float]:
    """(method, n, strength) of a settings dict; ConfigError naming the bad key otherwise."""
    if not isinstance(settings, Mapping):
        raise ConfigError(f"defect_feature_augment: expected a mapping, got {settings!r}")
    unknown = sorted(set(settings) - set(KEYS))
    if unknown:
        raise ConfigError(
            f"defect_feature_augment: unknown key(s) {', '.join(unknown)} "
            f"(known: {', '.join(KEYS)})"
        )
    method = settings.get("method")
    if method not in METHODS:
        raise ConfigError(
            f"defect_feature_augment: unknown method {method!r} (choose from {', '.join(METHODS)})"
        )
    n = settings.get("n")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ConfigError(f"defect_feature_augment: n must be a positive whole number, not {n!r}")
    strength = settings.get("strength", DEFAULT_STRENGTH)
    if isinstance(strength, bool) or not isinstance(strength, int | float) or strength <= 0:
        raise ConfigError(f"defect_feature_augment: strength must be > 0, not {strength!r}")
    return method, n, float(strength)


def augment_defect_features(
    defects: torch.Tensor,
    settings: Mapping[str, Any],
    seed: int = 0,
    nearest_normal: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """(n, D) new rows made from the (M, D) real ``defects`` as ``settings`` say (see above).

    ``nearest_normal`` maps (k, D) rows to their nearest normal-bank rows; ``toward_normal`` needs
    it. The same seed, rows and settings give the same output.
    """
    method, n, strength = check_settings(settings)
    x = defects.float()
    m = x.shape[0]
    if m == 0:
        raise ConfigError("defect_feature_augment: the defect bank has no rows to start from")
    n = n or m
    gen = torch.Generator().manual_seed(int(seed))
    start = x[torch.randint(m, (n,), generator=gen)]
    if method == "noise":
        # one row alone has no spread: fall back to the spread over its dimensions
        spread = x.std(0, unbiased=False) if m > 1 else x.std().expand(x.shape[1])
        return start + strength * spread * torch.randn(start.shape, generator=gen)
    weight = strength * torch.rand((n, 1), generator=gen)
    if method == "interpolate":
        partner = x[torch.randint(m, (n,), generator=gen)]
    else:
        if nearest_normal is None:
            raise ConfigError("defect_feature_augment: toward_normal needs the normal bank")
        partner = nearest_normal(start)
    return start + weight * (partner - start)

"""Metrics as written to ``metrics.json``: strict JSON, with a reason beside every missing value."""

from __future__ import annotations

import math
from typing import Any

#: why a metric can be undefined: its split or its masks hold one class only
REASONS = {
    "image_auroc": "the test split holds only good or only defective images",
    "image_ap": "the test split holds only good or only defective images",
    "f1_max": "the test split holds only good or only defective images",
    "f1_threshold": "the test split holds only good or only defective images",
    "pixel_auroc": "the test masks hold no defect pixel (or nothing else)",
    "pixel_aupro": "the test masks hold no defect pixel (or nothing else)",
}


def json_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with NaN written as null and, under ``undefined``, the reason for each."""
    out: dict[str, Any] = {}
    undefined = {}
    for key, value in metrics.items():
        if isinstance(value, float) and not math.isfinite(value):
            out[key] = None
            undefined[key] = REASONS.get(key, "not defined for this data")
        else:
            out[key] = value
    if undefined:
        out["undefined"] = undefined
    return out


def from_json(metrics: dict[str, Any]) -> dict[str, Any]:
    """Back from ``json_metrics``: null is NaN again, for code that computes with the values."""
    return {k: (math.nan if v is None else v) for k, v in metrics.items() if k != "undefined"}

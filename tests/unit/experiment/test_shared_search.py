"""The plain runner searches a shared fit's banks once: a run that differs from another only in
its dual rule adds no search (counted with a spy on the bank search, not timed)."""

from __future__ import annotations

import json

import pytest

from dualpatch.bank.memory import MemoryBank
from dualpatch.experiment.config import load_config
from dualpatch.experiment.runner import Experiment


def _searches(tmp_path, demo_root, name: str, runs: list[dict], monkeypatch) -> tuple[int, dict]:
    cfg = load_config(None, [
        "dataset=demo", f"data={demo_root}", f"out={tmp_path / name}", "image_size=[64, 32]",
        "coreset_min=40", "bootstrap=20", f"cache_dir={tmp_path / 'cache'}",
    ])  # fmt: skip
    cfg["runs"] = runs
    calls: list[int] = []
    search = MemoryBank._search
    monkeypatch.setattr(
        MemoryBank, "_search", lambda self, f, k: calls.append(f.shape[0]) or search(self, f, k)
    )
    Experiment(cfg).run()
    metrics = json.loads((tmp_path / name / "metrics.json").read_text())
    return len(calls), metrics


@pytest.mark.slow
def test_a_second_rule_on_the_same_fit_does_no_new_search(tmp_path, demo_root, monkeypatch):
    one, alone = _searches(
        tmp_path, demo_root, "one", [{"name": "dual", "bank": "dual"}], monkeypatch
    )
    two, both = _searches(tmp_path, demo_root, "two", [
        {"name": "dual", "bank": "dual"}, {"name": "dual-patch", "bank": "dual", "rule": "patch"},
    ], monkeypatch)  # fmt: skip
    assert one > 0
    assert two == one  # the second run's test and validation patches: answered from memory
    # the remembered answers are the search's: the shared run's figures do not move
    assert both["dual"]["image_auroc"] == alone["dual"]["image_auroc"]
    assert 0 <= both["dual-patch"]["image_auroc"] <= 1  # scored, with its own rule

"""benchmarks/line_speed.py judges each target against the anchor at the same ratio, refuses to
write figures taken while other processes held the CPU, and readme_tables.speed_table states met
and missed as the JSON has them."""

from __future__ import annotations

import sys

from tests.support.common import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))

import line_speed  # noqa: E402
import readme_tables  # noqa: E402

ANCHOR = {
    "coreset_ratio": 0.1,
    "test_step_ms_per_image": 80.0,
    "test_wall_ms_per_image": 90.0,
    "batch1_ms_median": 60.0,
    "process_peak_rss_mib": 1600.0,
    "fit_s": 1000.0,
    "metrics": {"image_AUROC": 0.9, "image_AP": 0.6, "pixel_AUPRO": 0.7},
}


def _runtime(batched_ms: float, b1_ms: float, p99_ms: float) -> dict:
    out = {"decode_resize_ms_per_image": 2.0}
    for batch in line_speed.BATCHES:
        out[f"batch{batch}_ms_per_image"] = batched_ms
    for suffix in ("", "_threads1"):
        out[f"batch1{suffix}_ms_median"] = b1_ms
        out[f"batch1{suffix}_ms_p99"] = p99_ms
    return out


def _round(rss: float) -> dict:
    r = {
        "torch": _runtime(40.0, 30.0, 60.0),  # 2x, half the latency, p99 2x: missed
        "onnx": _runtime(10.0, 15.0, 18.0),  # 90/12 = 7.5x, a quarter, p99 1.2x: met
        "openvino": _runtime(19.0, 19.0, 20.0),  # 90/21 < 4.3x but 80/19 = 4.2x: met
    }
    for step in ("evaluate_torch", "predict_torch", "predict_onnx", "predict_openvino"):
        r[step] = {"peak_rss_mib": rss}
    r["evaluate_torch"]["metrics"] = {"image_auroc": 0.95, "image_ap": 0.8, "pixel_aupro": 0.9}
    return r


def test_judge_states_each_target_against_the_anchor():
    t = line_speed.judge([_round(700.0)], ANCHOR, {"wall_s": 90.0})
    assert not t["torch"]["throughput_target_4x_met"]
    assert t["onnx"]["throughput_target_4x_met"]
    assert t["openvino"]["throughput_target_4x_met"]
    assert not t["torch"]["batch1_2_threads"]["latency_target_met"]
    assert t["onnx"]["batch1_2_threads"]["latency_target_met"]
    assert t["evaluate_torch_rss_target_met"]  # 700 <= 800
    assert t["fit"]["fit_target_0_1x_met"] and t["fit"]["fraction_of_anomalib"] == 0.09


def test_judge_takes_the_worse_round():
    slow = _round(900.0)
    slow["onnx"] = _runtime(30.0, 15.0, 18.0)
    t = line_speed.judge([_round(700.0), slow], ANCHOR, {"wall_s": 101.0})
    assert not t["onnx"]["throughput_target_4x_met"]
    assert not t["evaluate_torch_rss_target_met"]  # 900 > 800
    assert not t["fit"]["fit_target_0_1x_met"]


def test_contaminated_finds_every_busy_measurement():
    result = {
        "fit": {"foreign_cpu_fraction": 0.02},
        "rounds": [
            {"onnx": {"foreign_cpu_fraction": 0.3}},
            {"torch": {"foreign_cpu_fraction": 0.1}},
        ],
        "anchor": {"during_fit": {"foreign_frac_of_capacity": 0.5}},
    }
    bad = line_speed.contaminated(result, 0.10)
    assert bad == ["/rounds/onnx: 30%", "/anchor/during_fit: 50%"]
    assert line_speed.contaminated(result, 0.6) == []


def test_speed_table_says_met_and_missed_as_judged():
    t = line_speed.judge([_round(700.0)], ANCHOR, {"wall_s": 90.0})
    data = {
        "targets": t,
        "anomalib": ANCHOR,
        "coreset_ratio": 0.1,
        "coreset_rows": 2000,
        "backbone_alone": {"batch1_ms_median": 7.0, "batch32_ms_per_image": 6.0},
        "dualpatch_rounds": [_round(700.0)],
        "git_commit": "0123456789abcdef",
        "uptime_start": "up 1 day, load average: 0.10, 0.20, 0.30",
    }
    table = readme_tables.speed_table(data)
    (batched,) = [r for r in table.splitlines() if r.startswith("| batched")]
    cells = batched.split(" | ")[1:]
    assert "missed" in cells[0] and "**met**" in cells[1]
    assert "0.090 (90 s against 1000 s), **met**" in table
    assert "load 0.10, 0.20, 0.30" in table
    assert "ours image AUROC 0.950, AP 0.800, pixel AUPRO 0.900; anomalib 0.900, 0.600" in table

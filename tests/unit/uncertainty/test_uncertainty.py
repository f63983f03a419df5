"""Bootstrap intervals, fold summaries and the win / within-noise comparison."""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score

from dualpatch.experiment.protocol import choose_threshold, f1_at
from dualpatch.metrics.evaluation import aupro
from dualpatch.metrics.uncertainty import (
    compare,
    fold_counts,
    image_metrics,
    pixel_histograms,
    pixel_metrics,
    summarise,
)


def test_unit_weights_give_the_plain_metrics():
    rng = np.random.default_rng(3)
    labels = rng.random(200) < 0.2
    scores = np.round(rng.normal(size=200) + labels, 1)  # rounding makes ties
    m = image_metrics(labels, scores, np.ones((1, 200)), threshold=0.5)
    assert math.isclose(m["image_auroc"][0], roc_auc_score(labels, scores), abs_tol=1e-12)
    assert math.isclose(m["image_ap"][0], average_precision_score(labels, scores), abs_tol=1e-12)
    assert math.isclose(m["f1_at_threshold"][0], f1_at(labels, scores, 0.5), abs_tol=1e-12)


def test_interval_width_matches_the_hanley_mcneil_standard_error():
    # scores drawn so that the AUROC is about 0.75; the bootstrap's 95% interval should be about
    # +-1.96 standard errors of Hanley & McNeil (1982), a formula independent of resampling
    rng = np.random.default_rng(0)
    n_pos, n_neg = 150, 300
    scores = np.r_[rng.normal(0.95, 1, n_pos), rng.normal(0, 1, n_neg)]
    labels = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    (counts,) = fold_counts([len(scores)], 2000, seed=1)
    boot = image_metrics(labels, scores, counts)["image_auroc"]
    a = roc_auc_score(labels, scores)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    se = math.sqrt(
        (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / (n_pos * n_neg)
    )
    lo, hi = np.percentile(boot, [2.5, 97.5])
    assert lo < a < hi
    assert 0.8 < (hi - lo) / (2 * 1.96 * se) < 1.2


def test_perfect_separation_has_a_degenerate_interval():
    labels = np.r_[np.ones(10, bool), np.zeros(30, bool)]
    scores = np.r_[np.linspace(5, 6, 10), np.linspace(0, 1, 30)]
    (counts,) = fold_counts([40], 500, seed=0)
    boot = image_metrics(labels, scores, counts)["image_auroc"]
    assert np.allclose(boot, 1.0, rtol=0, atol=1e-12)


def test_pixel_histograms_reproduce_the_exact_pixel_metrics():
    rng = np.random.default_rng(5)
    maps = rng.gamma(2.0, size=(12, 48, 24)).astype(np.float32)
    masks = np.zeros(maps.shape, bool)
    masks[:6, 10:18, 5:11] = True
    masks[2, 30:40, 2:6] = True  # a second region in one image
    maps[masks] += rng.gamma(2.0, size=int(masks.sum()))
    m = pixel_metrics(pixel_histograms(maps, masks), np.ones((1, 12)))
    # measured with 2048 quantile bins: 6.9e-6 (AUROC) and 1.1e-5 (AUPRO); about 3x that allowed
    assert abs(m["pixel_auroc"][0] - roc_auc_score(masks.ravel(), maps.ravel())) < 2e-5
    assert abs(m["pixel_aupro"][0] - aupro(masks, maps)) < 3e-5


def test_summary_is_mean_std_and_percentile_interval():
    points = [{"image_auroc": 0.9, "note": "x"}, {"image_auroc": 0.8, "note": "y"}]
    boot = {"image_auroc": np.linspace(0.7, 1.0, 1001)}
    s = summarise(points, boot)
    assert math.isclose(s["image_auroc"], 0.85)
    assert math.isclose(s["image_auroc_std"], np.std([0.9, 0.8], ddof=1))
    assert np.allclose(s["image_auroc_ci"], [0.7075, 0.9925])
    assert "note" not in s and s["n_evaluations"] == 2


def test_comparison_calls_a_win_only_when_the_interval_excludes_zero():
    rng = np.random.default_rng(0)
    base = rng.normal(0.90, 0.02, 1000)
    better = base + 0.03 + rng.normal(0, 0.005, 1000)  # paired: shares base's resampling noise
    noisy = base + rng.normal(0, 0.02, 1000)
    assert compare(better, base, ("dual", "single"))["verdict"] == "dual wins"
    assert compare(base, better, ("single", "dual"))["verdict"] == "dual wins"
    c = compare(noisy, base, ("dual", "single"))
    assert c["verdict"] == "within noise" and c["ci"][0] < 0 < c["ci"][1]


def test_threshold_uses_validation_scores_only():
    labels = np.array([0, 0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.5, 0.9])
    t = choose_threshold(labels, scores)
    assert t["threshold"] == 0.5 and "F1-optimal" in t["rule"]
    only_normal = choose_threshold(np.zeros(101), np.arange(101.0), quantile=0.99)
    assert only_normal["threshold"] == 99.0 and "quantile" in only_normal["rule"]


def test_corrected_t_interval_known_answer():
    # J = 6 folds, n_test / n_train = 1/2: variance (1/6 + 1/2) * s^2, s^2 = 0.035 by hand,
    # t(0.975, 5) = 2.570582 (printed tables, 6 decimals); half width t * sqrt(0.035 * 2/3)
    from dualpatch.metrics.uncertainty import corrected_t_interval

    t = corrected_t_interval([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], test_share=0.5)
    half = 2.570582 * math.sqrt(0.035 * (1 / 6 + 0.5))
    assert math.isclose(t["mean"], 0.35, abs_tol=1e-12)
    assert np.allclose(t["ci"], [0.35 - half, 0.35 + half], rtol=0, atol=1e-6)
    assert t["n_folds"] == 6


def test_corrected_interval_is_wider_than_the_naive_t_interval():
    # the correction multiplies the standard error by sqrt(1 + J * n_test / n_train)
    from dualpatch.metrics.uncertainty import corrected_t_interval

    x = np.random.default_rng(0).normal(size=9)
    naive = corrected_t_interval(x, test_share=0.0)
    corrected = corrected_t_interval(x, test_share=0.5)
    ratio = np.diff(corrected["ci"])[0] / np.diff(naive["ci"])[0]
    assert math.isclose(ratio, math.sqrt(1 + 9 * 0.5), rel_tol=1e-12)


def test_corrected_paired_test_reports_the_observed_difference_and_a_verdict():
    from dualpatch.metrics.uncertainty import corrected_paired_test

    a = [0.9, 0.95, 0.92, 0.91, 0.94, 0.93]
    b = [0.8, 0.81, 0.79, 0.82, 0.8, 0.78]  # a - b = 0.1, 0.14, 0.13, 0.09, 0.14, 0.15
    r = corrected_paired_test(a, b, test_share=0.5, names=("dual", "single"))
    d = np.array(a) - np.array(b)
    half = 2.570582 * math.sqrt(d.var(ddof=1) * (1 / 6 + 0.5))
    assert math.isclose(r["difference"], d.mean(), abs_tol=1e-12)
    assert np.allclose(r["ci"], [d.mean() - half, d.mean() + half], rtol=0, atol=1e-6)
    assert r["verdict"] == "dual wins" and r["p"] < 0.05
    # a noisy difference of the same mean is within noise at the fold level
    noisy = corrected_paired_test(np.array(b) + [0.5, -0.3, 0.4, -0.2, 0.3, 0.0], b, 0.5)
    assert noisy["verdict"] == "within noise"


def test_compare_reports_the_observed_difference_not_the_bootstrap_mean():
    rng = np.random.default_rng(1)
    a, b = rng.normal(0.05, 0.01, 500), rng.normal(0.0, 0.01, 500)
    r = compare(a, b, ("A", "B"), observed=0.042)
    assert r["difference"] == 0.042
    assert math.isclose(r["bootstrap_mean"], float(np.mean(a - b)))
    assert r["verdict"] == "A wins"

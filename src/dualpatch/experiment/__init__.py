"""Experiments: the runner, cross-validation, few-shot runs and the protocol that
fits thresholds on training data only (layer 8)."""

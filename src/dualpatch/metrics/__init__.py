"""Metrics: image and pixel AUROC, AP, AUPRO, F1; fold-level and bootstrap uncertainty;
metric files (layer 4)."""

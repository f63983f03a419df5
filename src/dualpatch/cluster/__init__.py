"""Cluster: feature extraction and fits on Ray (layer 6)."""

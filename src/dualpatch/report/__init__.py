"""Report: the HTML report of a run, its data and its plots (layer 7)."""

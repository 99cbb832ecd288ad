"""The LESS baseline: gradient features (gradients) and the run (run)."""

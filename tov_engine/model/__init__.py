"""The model: loading and device, the surrogate with its adapters, log-probabilities, training and
scoring passes (torch)."""

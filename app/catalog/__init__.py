"""The model catalogue: which models the workers can run (``GET /v1/models``), and the check
that a job names one of them before it is queued."""

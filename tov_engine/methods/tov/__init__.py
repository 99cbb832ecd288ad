"""Train-on-Validation: the Algorithm 1 loop (trajectory), its scoring, one job (run), several
targets (multi) and staged runs (staged)."""

"""Results of a job: score storage, selections, and downloads as JSONL, CSV or Parquet."""

"""Data: row rules, dataset files, tokenising with loss masks, encoded sets and batches."""

"""Datasets: endpoints (`routes`), the service behind them (`service`), their schemas, the
validation of a file by format (`validation`) and where a file comes from (`sources`)."""

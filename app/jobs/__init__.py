"""Jobs: create (idempotently), read, list, cancel and delete; the endpoints under /v1/jobs."""

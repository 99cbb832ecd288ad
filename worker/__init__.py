"""GPU workers: Celery tasks that run the ToV engine for jobs stored in the database."""

# syntax=docker/dockerfile:1
# Multi-stage: the api image has no torch; the worker image has CUDA torch and the engine.

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv
RUN useradd --create-home --uid 10001 tov
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY worker ./worker
COPY tov_engine ./tov_engine
COPY migrations ./migrations

# API (and the one-off migrate step): FastAPI + SQLAlchemy + Celery producer only.
FROM base AS api
RUN pip install .
USER tov
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz')" || exit 1
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--no-access-log"]

# GPU worker: PyPI's default Linux torch wheel is the CUDA build.
FROM base AS worker
ARG TORCH_SPEC="torch>=2.4"
RUN pip install "${TORCH_SPEC}" && pip install ".[engine]"
USER tov
CMD ["celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO", "--concurrency", "1", \
     "--pool", "prefork", "--max-tasks-per-child", "1", "-Q", "tov", "--without-gossip", \
     "--without-mingle"]

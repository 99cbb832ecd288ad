# syntax=docker/dockerfile:1
# Multi-stage: the api image has no torch; the worker image has CUDA torch and the engine.
# Both install their dependencies from a hashed lock file (requirements/*.lock, `make lock`).

FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /srv
# The artifact folder exists in the image, owned by the service user: a new named volume mounted
# there starts with this owner instead of root.
RUN useradd --create-home --uid 10001 tov \
 && mkdir -p /var/lib/tov/artifacts \
 && chown -R tov:tov /var/lib/tov

FROM base AS source
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY worker ./worker
COPY tov_engine ./tov_engine
COPY tov_formats ./tov_formats
COPY tov_plan ./tov_plan
COPY migrations ./migrations

# API (and the one-off migrate step): FastAPI + SQLAlchemy + Celery producer only.
FROM base AS api
COPY requirements/api.lock requirements/
RUN pip install --require-hashes -r requirements/api.lock
COPY --from=source /srv /srv
RUN pip install --no-deps .
USER tov
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz')" || exit 1
CMD ["uvicorn", "app.main:app", "--host", "0.0.0.0", "--port", "8000", "--no-access-log"]

# GPU worker: the lock pins PyPI's Linux torch wheel, the CUDA build, with its nvidia-* libraries.
FROM base AS worker
COPY requirements/worker.lock requirements/
RUN pip install --require-hashes -r requirements/worker.lock
COPY --from=source /srv /srv
RUN pip install --no-deps ".[engine]"
USER tov
CMD ["celery", "-A", "worker.celery_app", "worker", "--loglevel", "INFO", "--concurrency", "1", \
     "--pool", "prefork", "--max-tasks-per-child", "1", "-Q", "tov", "--without-gossip", \
     "--without-mingle"]

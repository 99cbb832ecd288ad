"""The ASGI application: `uvicorn app.main:app`."""

from __future__ import annotations

from fastapi import FastAPI

from app.catalog.routes import router as models_router
from app.core import health
from app.core.config import get_settings
from app.core.errors import install_error_handlers
from app.core.limits import BodyLimitMiddleware
from app.core.observability import configure_logging, install_metrics
from app.datasets import ingest
from app.datasets.routes import router as datasets_router
from app.jobs.routes import router as jobs_router
from app.results.routes import router as results_router
from app.ui.routes import router as ui_router
from app.webhooks.routes import router as webhooks_router


def create_app() -> FastAPI:
    configure_logging(get_settings().log_level)
    application = FastAPI(
        title="ToV Select",
        version="0.1.0",
        description="Data selection as a service: Train on Validation (arXiv 2510.00386).",
        lifespan=ingest.lifespan,  # resumes dataset validations a dead API process left
    )
    install_error_handlers(application)
    install_metrics(application)
    application.add_middleware(BodyLimitMiddleware)  # outermost: refuses big bodies first
    application.include_router(health.router)
    application.include_router(datasets_router)
    application.include_router(jobs_router)
    application.include_router(results_router)
    application.include_router(models_router)
    application.include_router(webhooks_router)
    application.include_router(ui_router)
    return application


app = create_app()

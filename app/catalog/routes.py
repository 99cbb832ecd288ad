"""/v1/models: what the workers can run."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.catalog import service
from app.catalog.schemas import ModelList
from app.core.auth import TenantDep
from app.core.config import get_settings
from app.core.limits import rate_limit

router = APIRouter(prefix="/v1/models", tags=["models"], dependencies=[Depends(rate_limit)])


@router.get("", response_model=ModelList)
def list_models(tenant: TenantDep) -> ModelList:
    """The models installed under the model roots (the same for every tenant). A sync endpoint:
    it reads folders, so it runs in the thread pool, off the event loop."""
    del tenant  # authenticated like every /v1 endpoint; the catalogue is not per tenant
    return service.catalogue(get_settings())

"""The catalogue's two uses: the listing, and the check at job create that the model exists."""

from __future__ import annotations

from dataclasses import asdict

from app.catalog.inventory import find_model, known_names, list_models
from app.catalog.schemas import ModelList, ModelRead
from app.core.config import Settings
from app.core.errors import InvalidInput

MAX_NAMED = 20  # a 422 names at most this many known models (GET /v1/models has them all)


def catalogue(settings: Settings) -> ModelList:
    """Every model under the model roots, with what the folders say about it."""
    items = [ModelRead(**asdict(m)) for m in list_models(settings.model_roots)]
    return ModelList(items=items, default_model=settings.default_model)


def require_known_model(name: str, settings: Settings) -> None:
    """Refuse a job whose model no worker can load, at create (a 422 naming the known models)
    rather than minutes later in the worker. The API reads the same model roots as the
    workers, so it must see the same folders (mounted read-only). When it sees none of the
    roots at all (an API host without the models volume) it cannot tell, and leaves the check
    to the worker as before rather than refusing every job."""
    roots = settings.model_roots
    if not any(root.is_dir() for root in roots) or find_model(name, roots) is not None:
        return
    known = known_names(roots)
    shown = ", ".join(f"'{n}'" for n in known[:MAX_NAMED]) or "none"
    more = f" and {len(known) - MAX_NAMED} more" if len(known) > MAX_NAMED else ""
    reason = (
        f"model '{name}' is not installed on this server; known models: {shown}{more} "
        "(GET /v1/models lists them)."
    )
    raise InvalidInput(f"model: {reason}", errors=[{"field": "model", "reason": reason}])

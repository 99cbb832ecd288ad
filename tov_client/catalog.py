"""Model requests: what the workers can run (``GET /v1/models``)."""

from __future__ import annotations

from tov_client.models import ModelList
from tov_client.transport import Transport


class ModelsApi(Transport):
    """The ``/v1/models`` part of ``Client``."""

    def list_models(self) -> ModelList:
        """The models installed under the server's model roots, by name, with their type,
        parameter count (when cheaply known) and whether they carry a tokenizer;
        ``default_model`` is what a job without ``model`` runs."""
        return ModelList.model_validate(self._request("GET", "/v1/models").json())

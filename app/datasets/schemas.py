"""Dataset request and response schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.core.errors import InvalidInput
from app.schemas import URI_PATTERN, Strict


class DatasetRegister(Strict):
    uri: str = Field(
        min_length=1,
        json_schema_extra={"pattern": URI_PATTERN},
        description="file:// path under a configured data root, or an https://, s3:// or "
        "hf://datasets/... reference where the deployment allows it",
    )
    name: str | None = Field(default=None, max_length=300)


class DatasetRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    file_format: str
    row_format: str
    rows: int
    size_bytes: int
    sha256: str
    columns: list[str]
    created_at: datetime
    status: str = Field(
        default="ready",
        description="validating (a reference being fetched and checked: the counts are 0 until "
        "then), ready, or failed (see `error` and `errors`)",
    )
    error: str | None = None
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="failed: the {file, line|row, field, reason} problems found"
    )


def parse_register_body(raw: bytes) -> DatasetRegister:
    """The JSON body of a registration; 422 naming each bad field, like FastAPI's own bodies."""
    try:
        return DatasetRegister.model_validate_json(raw)
    except ValidationError as exc:
        errors = [
            {
                "field": ".".join(("body", *(str(part) for part in err["loc"]))),
                "reason": err["msg"],
            }
            for err in exc.errors(include_url=False, include_input=False)
        ]
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors[:5])
        raise InvalidInput(detail, errors=errors) from None

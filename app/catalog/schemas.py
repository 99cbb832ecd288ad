"""The JSON of ``GET /v1/models``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ModelRead(BaseModel):
    name: str = Field(description="What a job's `model` takes.")
    model_type: str | None = Field(description="config.json's model_type, e.g. llama, bert.")
    architectures: list[str] = Field(description="config.json's architectures.")
    parameters: int | None = Field(description="Number of parameters, when cheaply known.")
    parameters_source: Literal["safetensors", "config"] | None = Field(
        description="safetensors: counted from the weight files' headers (exact); config: "
        "estimated from config.json's sizes; null: unknown."
    )
    has_tokenizer: bool = Field(description="The folder carries its tokenizer files.")


class ModelList(BaseModel):
    items: list[ModelRead]
    default_model: str = Field(description="The model a job without `model` runs.")

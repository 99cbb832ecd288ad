"""``tov models``: the models the workers can run, by the name a job's ``--model`` takes."""

from __future__ import annotations

import typer
from rich.table import Table

from tov_client.commands.common import JsonOpt, emit_json, errors_reported, out
from tov_client.models import ModelInfo


def _parameters(model: ModelInfo) -> str:
    if model.parameters is None:
        return ""
    approx = "~" if model.parameters_source == "config" else ""
    return f"{approx}{model.parameters / 1e6:,.1f} M"


def models(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the models installed on the server (a job's --model takes the name)."""
    with errors_reported(as_json), ctx.obj.client() as client:
        listed = client.list_models()
    if as_json:
        emit_json(listed)
        return
    table = Table("name", "type", "parameters", "tokenizer", "default")
    for m in listed.items:
        table.add_row(
            m.name,
            m.model_type or "",
            _parameters(m),
            "yes" if m.has_tokenizer else "no",
            "*" if m.name == listed.default_model else "",
        )
    out.print(table)

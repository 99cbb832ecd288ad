"""What every ``tov`` command shares: the connection settings, the consoles, JSON output,
the mapping of the client's errors to exit codes, and small formatters."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from rich.console import Console

from tov_client.client import Client
from tov_client.errors import ApiError, JobFailed, TovError, WaitTimeout
from tov_client.models import Job
from tov_client.progress import STATUS_STYLE

out = Console()
err = Console(stderr=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout (for scripts).")]


@dataclass
class State:
    """The global options, kept on the typer context for the commands."""

    api_url: str
    api_key: str | None
    timeout: float

    def client(self) -> Client:
        return Client(self.api_url, self.api_key, timeout=self.timeout)


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout, with no markup."""
    typer.echo(json.dumps(_plain(value), indent=2, default=str))


@contextmanager
def errors_reported(as_json: bool) -> Iterator[None]:
    """Turn the client's errors into a clear message on stderr and an exit code."""
    try:
        yield
    except ApiError as exc:
        if as_json:
            typer.echo(json.dumps({"error": exc.to_dict()}, indent=2), err=True)
        else:
            err.print(f"[bold red]Error {exc.status}[/] {exc.title}: {exc.detail}", highlight=False)
            for item in exc.errors[:20]:
                where = ", ".join(f"{k} {item[k]}" for k in ("file", "line", "field") if k in item)
                err.print(f"  - {where}: {item.get('reason', '')}", highlight=False)
        raise typer.Exit(1) from exc
    except JobFailed as exc:
        if as_json:
            emit_json(exc.job)
        else:
            err.print(f"[bold red]{exc}[/]", highlight=False)
        raise typer.Exit(3) from exc
    except WaitTimeout as exc:
        if as_json:
            emit_json(exc.job)
        err.print(f"[yellow]{exc}[/]", highlight=False)
        raise typer.Exit(4) from exc
    except TovError as exc:
        err.print(f"[bold red]Error[/] {exc}", highlight=False)
        raise typer.Exit(1) from exc


def when(value: Any) -> str:
    """A timestamp as the tables show it (empty when unset)."""
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def status_markup(job: Job) -> str:
    """The job's status in its colour."""
    return f"[{STATUS_STYLE.get(job.status, 'white')}]{job.status}[/]"


def pairs(items: list[str] | None, option: str) -> dict[str, Any]:
    """``key=value`` options; the value is parsed as JSON when it can be (numbers, lists)."""
    parsed: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected KEY=VALUE, got '{item}'", param_hint=option)
        try:
            parsed[key] = json.loads(raw)
        except ValueError:
            parsed[key] = raw
    return parsed

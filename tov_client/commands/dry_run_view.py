"""How ``tov jobs create --dry-run`` shows a job's estimate."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from tov_client.commands.common import out

GIB = 1 << 30


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def _tokens(part: Any) -> str:
    parts = part if isinstance(part, list) else [part]
    return "; ".join(
        f"{_count(p['tokens'])} tokens, {_count(p['loss_tokens'])} loss-bearing"
        + (f", {p['truncated_rows']} rows truncated" if p.get("truncated_rows") else "")
        for p in parts
    )


def _cache(cache: dict[str, Any]) -> str:
    if not cache.get("enabled"):
        return "off"
    pool = "tokenised pool cached" if cache.get("pool_encoding") else "pool not cached"
    if "base_rounds_reused" in cache:
        return f"{pool}; {cache['base_rounds_reused']} base round(s) reused"
    return pool


def show_estimate(e: dict[str, Any]) -> None:
    """Print a dry run's answer as a two-column table."""
    table = Table(show_header=False, box=None, title="dry run: no job was created")
    table.add_column(style="bold")
    table.add_column()
    rows, passes, memory = e["rows"], e["passes"], e["memory"]
    fits = "[green]yes[/]" if e["fits"] else "[red]no[/]"
    advice = "; ".join(a["words"] for a in memory.get("advice", [])[:2])
    for key, value in [
        ("model", f"{e['model']} ({e['method']}, {e['precision']})"),
        ("device", f"{e['device_class']}: {e['device']}"),
        (
            "rows",
            f"pool {_count(rows['pool'])}, validation {rows['validation']}, "
            f"budget {rows['budget']}, |U| {rows['base_size']}, rounds {rows['rounds']}",
        ),
        ("pool tokens", _tokens(e["tokens"]["pool"])),
        ("validation tokens", _tokens(e["tokens"]["validation"])),
        (
            "passes",
            f"{_count(passes['forward_row_passes'])} row forwards, "
            f"{_count(passes['backward_row_passes'])} row backwards "
            f"({_count(passes['forward_tokens'])} / {_count(passes['backward_tokens'])} "
            "tokens)",
        ),
        ("pool cache", _cache(e["pool_cache"])),
        ("wall time", f"about {e['time']['seconds']:.0f} s"),
        (
            "peak memory",
            f"about {memory.get('peak_bytes', 0) / GIB:.2f} GiB "
            f"of {memory.get('device_bytes', 0) / GIB:.0f} GiB",
        ),
        ("fits", fits + (f" ({advice})" if advice and not e["fits"] else "")),
    ]:
        table.add_row(key, str(value))
    out.print(table)

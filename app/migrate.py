"""Apply Alembic migrations programmatically (a one-off step, never at API start)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def upgrade_database(url: str | None = None) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["configure_logger"] = False
    if url:
        config.attributes["url"] = url
    command.upgrade(config, "head")

"""The Celery application of the workers: `celery -A worker.celery_app worker`."""

from __future__ import annotations

import logging
import sys

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready
from celery.utils.log import LoggingProxy

from app.core.config import get_settings
from app.core.observability import configure_logging
from app.core.queue import celery_config

celery = Celery("tov-worker", include=["worker.tasks"])
celery.conf.update(celery_config(get_settings()))
celery.conf.update(worker_hijack_root_logger=False)


@worker_init.connect
def _preload(sender: object = None, **_: object) -> None:
    # Import the ML stack once in the main process, before any pool child is forked: every child
    # (one per job or shard message, --max-tasks-per-child 1) then starts with it loaded instead
    # of spending seconds importing torch, transformers and peft. Nothing runs on torch here, so
    # no thread pool exists yet to be broken by the fork. The selector (solo pool) needs none of it.
    if "solo" in str(getattr(sender, "pool_cls", "")):
        return
    import tov_engine

    tov_engine.preload()


@worker_process_init.connect
def _configure_child(**_: object) -> None:
    # The child process owns the GPU and its own database connections (nothing inherited by fork).
    from app.core.db import get_engine

    get_engine().dispose(close=False)
    configure_logging(get_settings().log_level)
    # In a pool child sys.stderr is Celery's LoggingProxy (stdout/stderr redirected to a logger): a
    # handler writing there feeds the logger back into itself, and Celery's recursion guard then
    # drops every record, so nothing the child logs would reach the worker's log. Write to the
    # real stderr instead.
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and isinstance(handler.stream, LoggingProxy):
            handler.setStream(sys.__stderr__)


@worker_ready.connect
def _start_reaper(**_: object) -> None:
    from worker.reaper import start_reaper_thread

    start_reaper_thread()

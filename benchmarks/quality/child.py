"""The entry point of every benchmark child process: runs one job function and leaves evidence.

`run_wrapped(module, fn_name, spec, out_path, fault_log, error_file)` imports
`module.fn_name`, enables faulthandler into `fault_log` (a crash in C code, a fatal signal or a
hang dumped by faulthandler leaves every thread's Python stack there), and runs the function. An
exception is written with its full traceback to `error_file` before the child exits non-zero, so
the parent (run.run_child) can print what went wrong instead of a bare exit code.

Kept free of heavy imports: the parent pickles a reference to `run_wrapped`, and a child started
by the spawn context imports this module first.
"""

from __future__ import annotations

import faulthandler
import importlib
import sys
import traceback
from pathlib import Path
from typing import Any


def run_wrapped(
    module: str,
    fn_name: str,
    spec: dict[str, Any],
    out_path: str,
    fault_log: str,
    error_file: str,
) -> None:
    """Run `module.fn_name(spec, out_path)`; see the module docstring."""
    # faulthandler writes to the file descriptor: the file stays open while the job runs
    with open(fault_log, "w", encoding="utf-8") as log:
        faulthandler.enable(file=log, all_threads=True)
        try:
            fn = getattr(importlib.import_module(module), fn_name)
            fn(spec, out_path)
        except BaseException:  # SystemExit and KeyboardInterrupt too: the parent wants to know
            Path(error_file).write_text(traceback.format_exc(), encoding="utf-8")
            raise SystemExit(1) from None  # the parent prints the traceback: no second copy
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            faulthandler.disable()

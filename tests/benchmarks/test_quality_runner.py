"""The quality benchmark's child runner (run.run_child): a failing child's traceback reaches the
parent's log and error, a child that fails once is retried and its result used, and a child that
dies after writing its whole result (a crash at interpreter teardown) has the result accepted.

The child functions below are top-level so a spawned child can import them by name; they load no
model (each test takes about a second)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from pathlib import Path
from typing import Any

import pytest

from benchmarks.quality import run

MODULE = __name__  # the children import this module by name


def _write(out_path: str, result: dict[str, Any]) -> None:
    Path(out_path).write_text(json.dumps(result) + "\n")


def raises(spec: dict[str, Any], out_path: str) -> None:
    """Always fails with a recognisable exception, deep in a helper."""
    _helper_that_breaks(spec["token"])


def _helper_that_breaks(token: str) -> None:
    raise ValueError(f"selection exploded: {token}")


def fails_once(spec: dict[str, Any], out_path: str) -> None:
    """Fails on the first try (leaving a marker file), succeeds on the second."""
    marker = Path(spec["marker"])
    tries = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(tries))
    if tries == 1:
        raise RuntimeError("transient failure on the first try")
    _write(out_path, {"value": 42, "tries": tries})


def dies_without_traceback_once(spec: dict[str, Any], out_path: str) -> None:
    """The first try exits 255 from C level (no exception, no traceback); the second succeeds."""
    marker = Path(spec["marker"])
    if not marker.exists():
        marker.write_text("1")
        os._exit(255)
    _write(out_path, {"value": 7})


def crashes_at_teardown(spec: dict[str, Any], out_path: str) -> None:
    """Writes its whole result, then the process dies with 255 (as at interpreter teardown)."""
    _write(out_path, {"value": 3})
    os._exit(255)


def segfaults(spec: dict[str, Any], out_path: str) -> None:
    """Dies of SIGSEGV in C code: no Python exception, only faulthandler sees it."""
    import faulthandler

    faulthandler._sigsegv()


def counts_and_fails(spec: dict[str, Any], out_path: str) -> None:
    marker = Path(spec["marker"])
    marker.write_text(str(int(marker.read_text()) + 1 if marker.exists() else 1))
    raise RuntimeError("always broken")


@pytest.fixture
def ctx() -> Any:
    return mp.get_context("spawn")


def test_a_failing_child_shows_its_traceback_in_the_parent(
    ctx: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sel_x_s0.json"
    with pytest.raises(run.ChildFailed) as err:
        run.run_child(ctx, "raises", {"token": "tok-123"}, out, module=MODULE, retries=0)
    message = str(err.value)
    assert "Traceback (most recent call last)" in message
    assert "_helper_that_breaks" in message  # the frame where it broke
    assert "ValueError: selection exploded: tok-123" in message
    logged = capsys.readouterr().out
    assert "ValueError: selection exploded: tok-123" in logged
    assert "raises failed (exit 1) for sel_x_s0.json, try 1 of 1" in logged
    assert not out.exists()


def test_a_child_that_fails_once_is_retried_and_its_result_used(
    ctx: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "ft_random_s0.json"
    marker = tmp_path / "marker"
    got = run.run_child(ctx, "fails_once", {"marker": str(marker)}, out, module=MODULE)
    assert got == {"value": 42, "tries": 2}
    assert json.loads(out.read_text()) == got  # stored where the bench reads it
    assert marker.read_text() == "2"  # it really ran twice
    logged = capsys.readouterr().out
    assert "RuntimeError: transient failure on the first try" in logged
    assert "retrying fails_once for ft_random_s0.json" in logged
    # nothing of the failed try is left next to the result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ft_random_s0.json", "marker"]


def test_a_child_dying_without_a_traceback_is_reported_and_retried(
    ctx: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sel_tov_s1.json"
    spec = {"marker": str(tmp_path / "marker")}
    got = run.run_child(ctx, "dies_without_traceback_once", spec, out, module=MODULE)
    assert got == {"value": 7}
    logged = capsys.readouterr().out
    assert "failed (exit 255)" in logged and "no traceback" in logged


def test_a_whole_result_is_accepted_despite_a_crash_at_teardown(
    ctx: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sel_less_s2.json"
    got = run.run_child(ctx, "crashes_at_teardown", {}, out, module=MODULE, retries=0)
    assert got == {"value": 3} and json.loads(out.read_text()) == got
    logged = capsys.readouterr().out
    assert "WARNING: crashes_at_teardown for sel_less_s2.json exited 255" in logged


def test_a_child_failing_every_try_stops_after_one_retry(ctx: Any, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    with pytest.raises(run.ChildFailed, match="try 2 of 2"):
        run.run_child(
            ctx, "counts_and_fails", {"marker": str(marker)}, tmp_path / "a.json", module=MODULE
        )
    assert marker.read_text() == "2"  # CHILD_RETRIES = 1: two tries in all


def test_a_crash_in_c_code_shows_faulthandlers_stack_in_the_parent(
    ctx: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sel_tov_s0.json"
    with pytest.raises(run.ChildFailed) as err:
        run.run_child(ctx, "segfaults", {}, out, module=MODULE, retries=0)
    message = str(err.value)
    assert "failed (exit -11)" in message  # SIGSEGV
    assert "faulthandler output:" in message and "Segmentation fault" in message
    assert "in segfaults" in message  # the Python frame that was running
    assert "Segmentation fault" in capsys.readouterr().out

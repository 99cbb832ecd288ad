"""The dashboard in a real headless Chromium against a real API and worker: sign in, the jobs
list, a finished job's charts (with data), no console errors; and the JSON behind the charts.

Set TOV_DASHBOARD_SCREENSHOT=docs/dashboard.png to refresh the README's screenshot of a job page
(TOV_DASHBOARD_JOBS_SCREENSHOT=PATH for the jobs list).
"""

from __future__ import annotations

import base64
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.client.live import Live, live_service, pool_rows
from tests.service_fixtures import make_key
from tests.ui.browser import browser_or_skip, console_errors

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def live(
    service_env: dict[str, str],
    service_dirs: dict[str, Path],
    installed_tiny_model: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Live]:
    logs = tmp_path_factory.mktemp("ui-live-logs")
    with live_service(service_env, make_key("ui-live"), service_dirs["data"], logs) as svc:
        yield svc


def get(live: Live, path: str) -> Any:
    response = httpx.get(
        f"{live.url}{path}", headers={"Authorization": f"Bearer {live.key}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_chart_data_matches_the_results(live: Live) -> None:
    pool = pool_rows()
    with live.client() as tov:
        selection = tov.read_frame(live.job.id, "selection")
        scores = tov.read_frame(live.job.id, "scores")
    summary = get(live, f"/ui/api/jobs/{live.job.id}/summary")
    scored = scores["score"].notna()
    assert summary["rows"] == len(pool) and summary["scored"] == int(scored.sum())
    assert summary["selected"] == len(selection) == 24
    hist = summary["histogram"]
    assert len(hist["edges"]) == len(hist["pool"]) + 1 == 31
    assert sum(hist["pool"]) == summary["scored"]
    picked_scored = selection[selection["index"].isin(scores.index[scored])]
    assert sum(hist["selected_score"]) + sum(hist["selected_random"]) == len(picked_scored)
    bins = summary["length_bins"]
    assert len(bins) == summary["num_bins"] == 4
    assert sum(b["count"] for b in bins) == summary["scored"]
    assert [b["min_length"] for b in bins] == sorted(b["min_length"] for b in bins)
    assert all(b["p5"] <= b["q1"] <= b["median"] <= b["q3"] <= b["p95"] for b in bins)
    by_score = int((selection["source"] == "score").sum())
    assert sum(b["selected_score"] for b in bins) == by_score
    assert sum(b["selected_random"] for b in bins) == len(selection) - by_score

    made_up = get(live, f"/ui/api/jobs/{live.job.id}/composition")
    assert made_up["present"] and made_up["column"] == "source"
    assert made_up["pool"] == dict(Counter(r["source"] for r in pool))
    picked = Counter(pool[i]["source"] for i in selection["index"])
    assert {k: v for k, v in made_up["selection"].items() if v} == dict(picked)
    absent = get(live, f"/ui/api/jobs/{live.job.id}/composition?column=topic")
    assert absent["present"] is False and "source" in absent["columns"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    yield from browser_or_skip(tmp_path_factory.mktemp("chromium-profile"))


def wait_for(driver: Any, condition: Any, timeout: float = 30) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def count(driver: Any, selector: str) -> int:
    return len(driver.find_elements("css selector", selector))


def data_sum(driver: Any, selector: str) -> int:
    return sum(
        int(e.get_attribute("data-count")) for e in driver.find_elements("css selector", selector)
    )


def test_dashboard_in_a_real_browser(live: Live, browser: Any) -> None:
    driver = browser
    pool = pool_rows()
    driver.get(f"{live.url}/ui")
    wait_for(driver, lambda d: d.find_element("id", "login").is_displayed())
    assert not driver.find_element("id", "content").is_displayed()  # no key, no data
    driver.find_element("id", "api-key").send_keys(live.key)
    driver.find_element("css selector", "#login-form button").click()

    row = f'#jobs-table tr[data-job-id="{live.job.id}"]'
    wait_for(driver, lambda d: count(d, f"{row} [data-status=succeeded]") == 1)
    wait_for(driver, lambda d: count(d, "#datasets-table tbody tr") >= 1)
    assert console_errors(driver) == []
    screenshot(driver, os.environ.get("TOV_DASHBOARD_JOBS_SCREENSHOT"))

    driver.find_element("css selector", f"{row} a").click()
    wait_for(
        driver,
        lambda d: d.find_element("tag name", "body").get_attribute("data-charts-ready") == "true",
    )
    assert driver.find_element("id", "job-status").text == "succeeded"
    assert driver.find_element("id", "job-progress").get_attribute("value") == "1"
    scored = len(pool) - 8

    assert count(driver, "svg[data-chart=histogram] rect.bar.pool") == 30
    assert data_sum(driver, "svg[data-chart=histogram] rect.bar.pool") == scored
    assert data_sum(driver, "svg[data-chart=histogram] rect.bar.selected") > 0
    assert count(driver, "svg[data-chart=length-bins] g.bin") == 4
    assert data_sum(driver, "svg[data-chart=length-bins] g.bin") == scored
    assert data_sum(driver, "svg[data-chart=length-selected] rect.bar") == 24
    sources = {
        e.get_attribute("data-name")
        for e in driver.find_elements("css selector", "svg[data-chart=composition] g.category")
    }
    assert sources == {r["source"] for r in pool}
    assert data_sum(driver, "svg[data-chart=composition] rect.bar.pool") == len(pool)
    assert data_sum(driver, "svg[data-chart=composition] rect.bar.selected") == 24
    assert count(driver, "#downloads button") == 9
    assert count(driver, "#events-table tbody tr") >= 3
    assert console_errors(driver) == []

    screenshot(driver, os.environ.get("TOV_DASHBOARD_SCREENSHOT"))

    driver.find_element("id", "logout").click()
    driver.refresh()
    wait_for(driver, lambda d: d.find_element("id", "login").is_displayed())
    assert console_errors(driver) == []


def screenshot(driver: Any, target: str | None) -> None:
    """The whole job page as a PNG, where asked (relative paths are from the repository)."""
    if not target:
        return
    path = Path(target) if Path(target).is_absolute() else REPO / target
    path.parent.mkdir(parents=True, exist_ok=True)
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}
    )
    path.write_bytes(base64.b64decode(shot["data"]))

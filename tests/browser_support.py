"""Drive the Airflow UI as a person would: headless Chromium (Debian's chromium and
chromium-driver) through Selenium, with Debian's driver so nothing is downloaded."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Iterator

import httpx

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@contextlib.contextmanager
def browser() -> Iterator:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.implicitly_wait(30)
    try:
        yield driver
    finally:
        driver.quit()


def choose(driver, field: str, value: str) -> None:
    """Pick ``value`` in the form's select for param ``field`` (a react-select: type, then Enter)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, f"#element_{field} input[role=combobox]")
    box.click()
    box.send_keys(value)
    box.send_keys(Keys.ENTER)
    chosen = driver.find_element(By.CSS_SELECTOR, f"input[type=hidden][name=element_{field}]").get_attribute("value")
    assert chosen == value, f"form field {field}: chose {value!r}, the form holds {chosen!r}"


def trigger_from_form(base_url: str, dag_id: str, choices: dict[str, str], screenshot: Path,
                      api: httpx.Client, timeout: float = 900) -> str:
    """Open the DAG's page, trigger it through the form with ``choices`` changed, then watch the
    run's page until the UI shows it succeeded. Saves ``screenshot`` of that page; returns the
    run id. ``api`` finds the new run's id (the form does not show it)."""
    from selenium.webdriver.common.by import By

    before = {r["dag_run_id"] for r in api.get(f"/dags/{dag_id}/dagRuns", params={"limit": 100}).json()["dag_runs"]}
    with browser() as driver:
        driver.get(f"{base_url}/dags/{dag_id}")
        driver.find_element(By.CSS_SELECTOR, "[data-testid=trigger-dag-button]").click()
        for field, value in choices.items():
            choose(driver, field, value)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot.with_name(screenshot.stem + "-form.png")))
        driver.find_element(By.CSS_SELECTOR, "[data-testid=trigger-dag-submit]").click()
        run_id = _new_run(api, dag_id, before)
        driver.get(f"{base_url}/dags/{dag_id}/runs/{run_id}")
        deadline = time.monotonic() + timeout
        while _shown_state(driver) not in ("success", "failed"):
            if time.monotonic() > deadline:
                raise AssertionError(f"the UI did not show run {run_id} finished in {timeout}s")
            time.sleep(5)
            driver.refresh()
        driver.save_screenshot(str(screenshot))
        state = _shown_state(driver)
    assert state == "success", f"the UI shows run {run_id} {state}"
    return run_id


def _new_run(api: httpx.Client, dag_id: str, before: set[str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = api.get(f"/dags/{dag_id}/dagRuns", params={"limit": 100}).json()["dag_runs"]
        new = [r["dag_run_id"] for r in runs if r["dag_run_id"] not in before]
        if new:
            return new[0]
        time.sleep(1)
    raise AssertionError("submitting the trigger form created no run")


def _shown_state(driver) -> str:
    """The run's state as the run page's header shows it."""
    from selenium.webdriver.common.by import By

    badges = driver.find_elements(By.CSS_SELECTOR, "[data-testid=state-badge]")
    return badges[0].text.strip().lower() if badges else ""

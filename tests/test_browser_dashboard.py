"""A real headless Chromium against the real dashboard (`flywheel dashboard`): sign in, approve a pair,
open the Models page; an admin adds a reviewer, who reviews in another tab and is signed out at their next
click once disabled. Screenshots go to test-artifacts/; any Streamlit exception on a page fails."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

from dashboard_support import ADMIN, CLOSED_PORT_URL, seed, stored
from storage.models import PairStatus
from storage.pairs import get_pair
from storage.users import find_user
from vllm_fixture import free_port

pytestmark = pytest.mark.browser
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMEDRIVER = "/usr/bin/chromedriver"
WAIT_S = 60


@pytest.fixture
def dashboard_url(sqlite_url, tmp_path):
    data = seed(sqlite_url)
    port = free_port()
    env = {**os.environ, "FLYWHEEL_DATABASE_URL": sqlite_url, "FLYWHEEL_HOME": str(tmp_path / "home"),
           "FLYWHEEL_VLLM_URL": CLOSED_PORT_URL, "FLYWHEEL_DASHBOARD_PORT": str(port)}
    log = (tmp_path / "dashboard.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "flywheel", "dashboard"], env=env, stdout=log,
                               stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url, data
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def wait_healthy(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        assert process.poll() is None, "the dashboard exited"
        try:
            if httpx.get(f"{url}/_stcore/health", timeout=2).text == "ok":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the dashboard did not become healthy within {WAIT_S} s")


@pytest.fixture
def browser():
    if not Path(CHROMEDRIVER).exists():
        pytest.fail("chromedriver missing: apt-get install -y chromium chromium-driver (or `make system-tools`)")
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--window-size=1440,1800"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait_text(driver, text: str) -> None:
    WebDriverWait(driver, WAIT_S).until(EC.presence_of_element_located(
        (By.XPATH, f"//*[contains(normalize-space(.), {text!r}) and not(*[contains(normalize-space(.), {text!r})])]")))


def idle(driver) -> bool:
    """No script run in progress (the status widget shows "Running…" / "Stop" while one is)."""
    return not any(w.text.strip() for w in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]'))


def settle_and_shoot(driver, name: str) -> None:
    """Wait for the script run to finish, fail on a Streamlit exception, save a screenshot."""
    for _ in range(2):  # the status widget appears a moment after a run starts: check twice
        time.sleep(1)
        WebDriverWait(driver, WAIT_S).until(idle)
    ARTIFACTS.mkdir(exist_ok=True)
    driver.save_screenshot(str(ARTIFACTS / f"dashboard-{name}.png"))
    errors = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
    assert not errors, f"Streamlit exception on {name}: {errors[0].text}"


def button(driver, label: str):
    xpath = f"//button[.//p[normalize-space(.)={label!r}]]"
    return WebDriverWait(driver, WAIT_S).until(EC.element_to_be_clickable((By.XPATH, xpath)))


def open_page(driver, title: str) -> None:
    link = WebDriverWait(driver, WAIT_S).until(EC.element_to_be_clickable(
        (By.XPATH, f"//a[@data-testid='stSidebarNavLink'][.//span[normalize-space(.)={title!r}]]")))
    link.click()


def nav_links(driver) -> list[str]:
    """The sidebar's page titles (a link's text also holds its icon's name, on the line before)."""
    links = driver.find_elements(By.XPATH, "//a[@data-testid='stSidebarNavLink']")
    return [link.text.strip().splitlines()[-1] for link in links]


def type_into(driver, label: str, text: str) -> None:
    """Into the first input with this label (the Accounts page has two password forms)."""
    field = WebDriverWait(driver, WAIT_S).until(EC.element_to_be_clickable(
        (By.CSS_SELECTOR, f'input[aria-label="{label}"]')))
    field.send_keys(text)


def choose(driver, label: str, option: str) -> None:
    """Pick `option` in the selectbox labelled `label` (a combo box: open it, click the option)."""
    WebDriverWait(driver, WAIT_S).until(EC.element_to_be_clickable(
        (By.CSS_SELECTOR, f'input[role="combobox"][aria-label="{label}"]'))).click()
    WebDriverWait(driver, WAIT_S).until(EC.element_to_be_clickable(
        (By.XPATH, f"//*[@role='option'][normalize-space(.)={option!r}]"))).click()


def sign_in(driver, url: str, username: str, password: str, shot: str | None = None) -> None:
    driver.get(url)
    wait_text(driver, "Sign in")
    if shot:
        settle_and_shoot(driver, shot)
    type_into(driver, "Username", username)
    type_into(driver, "Password", password)
    button(driver, "Sign in").click()
    wait_text(driver, "Pending pairs")


def test_sign_in_approve_a_pair_and_open_models(dashboard_url, browser, sqlite_url):
    url, data = dashboard_url
    sign_in(browser, url, *ADMIN, shot="sign-in")
    wait_text(browser, "Answers per day")
    settle_and_shoot(browser, "overview")

    open_page(browser, "Review queue")
    wait_text(browser, "pair(s) match")
    settle_and_shoot(browser, "review")
    newest = data.pending_ids[0]
    button(browser, "Approve").click()  # the first pair on the page is the newest
    wait_text(browser, f"Approved 1 pair(s): #{newest}")
    settle_and_shoot(browser, "review-approved")
    assert stored(sqlite_url, lambda s: get_pair(s, newest).status) is PairStatus.approved

    open_page(browser, "Models")
    wait_text(browser, "Compare with the active version")
    settle_and_shoot(browser, "models")
    for name, marker in (("Training", "Reward margin"), ("Data", "Dataset snapshots"), ("Playground", "New conversation")):
        open_page(browser, name)
        wait_text(browser, marker)
        settle_and_shoot(browser, name.lower())


def test_an_admin_adds_a_reviewer_who_cannot_promote_and_is_signed_out_once_disabled(dashboard_url, browser,
                                                                                   sqlite_url):
    url, data = dashboard_url
    reviewer = ("rachel@example.com", "rachels-password")
    sign_in(browser, url, *ADMIN)
    admin_tab = browser.current_window_handle
    assert {"Review queue", "Models", "Accounts", "Audit log"} <= set(nav_links(browser))
    open_page(browser, "Accounts")
    wait_text(browser, "Add an account")
    type_into(browser, "Username or e-mail", reviewer[0])
    type_into(browser, "Password", reviewer[1])
    type_into(browser, "Repeat the password", reviewer[1])
    button(browser, "Add account").click()
    wait_text(browser, f"Account {reviewer[0]} created (reviewer).")
    settle_and_shoot(browser, "accounts-added")

    browser.switch_to.new_window("tab")  # a second Streamlit session: the reviewer's
    sign_in(browser, url, *reviewer)
    assert "Review queue" in nav_links(browser) and not {"Accounts", "Audit log"} & set(nav_links(browser))
    open_page(browser, "Review queue")
    wait_text(browser, "pair(s) match")
    newest = data.pending_ids[0]
    button(browser, "Approve").click()
    wait_text(browser, f"Approved 1 pair(s): #{newest}")
    pair = stored(sqlite_url, lambda s: get_pair(s, newest))
    assert (pair.status, pair.reviewer) == (PairStatus.approved, reviewer[0])
    open_page(browser, "Models")
    wait_text(browser, "Promoting, rolling back and canaries need an admin account.")
    settle_and_shoot(browser, "models-as-reviewer")
    labels = [b.text for b in browser.find_elements(By.TAG_NAME, "button")]
    assert not [label for label in labels if label.startswith(("Promote", "Roll back", "Start canary"))], labels

    browser.switch_to.window(admin_tab)
    choose(browser, "Account", reviewer[0])
    button(browser, f"Disable {reviewer[0]}").click()
    button(browser, "Confirm").click()
    wait_text(browser, "signed out at their next click")
    settle_and_shoot(browser, "accounts-disabled")
    assert stored(sqlite_url, lambda s: find_user(s, reviewer[0]).enabled) is False
    open_page(browser, "Audit log")
    wait_text(browser, "matching event(s), newest first.")
    settle_and_shoot(browser, "audit-log")

    browser.switch_to.window(browser.window_handles[1])
    open_page(browser, "Overview")  # the reviewer's next click
    wait_text(browser, "this account is disabled")
    settle_and_shoot(browser, "signed-out")
    assert button(browser, "Sign in") and not nav_links(browser)

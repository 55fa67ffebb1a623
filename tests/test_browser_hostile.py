"""What a user writes is shown as text, never run: a better answer full of HTML, script and markdown, in the
real dashboard's review queue, in a real headless Chromium."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from test_browser_dashboard import browser, button, dashboard_url, open_page, settle_and_shoot, wait_text  # noqa: F401

from dashboard_support import ADMIN
from storage.db import make_engine, session_scope
from storage.models import PairSource
from storage.pairs import create_pair

pytestmark = pytest.mark.browser
SCRIPT = "<script>window.__pwned = 'script'</script>"
IMAGE = "<img src=x onerror=\"window.__pwned='img'\">"
LINK = "[click me](javascript:window.__pwned='link')"
HOSTILE = f"Here is a better answer.\n\n{SCRIPT} {IMAGE}\n\n**not bold** {LINK}\n\n<b>not bold either</b>"


def test_markup_in_a_better_answer_is_shown_as_text_on_the_review_page(dashboard_url, browser, sqlite_url):
    url, _ = dashboard_url
    engine = make_engine(sqlite_url)
    with session_scope(engine) as session:  # the newest pending pair: first on the page
        create_pair(session, [{"role": "user", "content": f"Question with {SCRIPT} in it"}], HOSTILE,
                    "The bot's answer.", PairSource.alternative)
    engine.dispose()
    browser.get(url)
    wait_text(browser, "Sign in")
    settle_and_shoot(browser, "sign-in-hostile")
    browser.find_element(By.CSS_SELECTOR, 'input[aria-label="Username"]').send_keys(ADMIN[0])
    browser.find_element(By.CSS_SELECTOR, 'input[aria-label="Password"]').send_keys(ADMIN[1])
    button(browser, "Sign in").click()
    wait_text(browser, "Pending pairs")
    open_page(browser, "Review queue")
    wait_text(browser, "pair(s) match")
    settle_and_shoot(browser, "review-hostile")

    page = browser.find_element(By.TAG_NAME, "body").text
    for literal in (SCRIPT, IMAGE, "**not bold**", "<b>not bold either</b>", LINK):
        assert literal in page, f"{literal!r} is not shown as written"
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.find_elements(By.CSS_SELECTOR, 'img[src="x"]') == []
    assert not [e for e in browser.find_elements(By.CSS_SELECTOR, "strong, b") if "not bold" in e.text]
    assert not [a for a in browser.find_elements(By.TAG_NAME, "a")
                if (a.get_attribute("href") or "").startswith("javascript:")]

"""The web page at `/`, in a real headless Chromium, against the real stack (Store, Distribution,
Runner with the tiny GGUF, gateway) and a real docker-registry: the page loads without a console error,
a pull shows progress and the model appears, a chat streams into the page, the running table shows the
loaded model, the requests view shows the chat, the load charts draw points. Screenshots of every view
are written under the test's temp dir."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port
from tests.support.stack import Stack
from tests.support.browser import chromium, console_errors, text_of, wait_for
from tests.support.packaging import package
from tests.support.registry import Registry, dmr_artifact, upload


class MeteredStack(Stack):
    """The stack with the Runner's Prometheus endpoint on, and the gateway relaying it on /metrics."""

    def __init__(self, workdir: Path) -> None:
        self.metrics_port = free_port()
        super().__init__(workdir, {"MODELRUNNER_RUNNER_METRICS_URL": f"http://127.0.0.1:{self.metrics_port}/metrics"})

    def start(self, names=Stack.SERVICES) -> Stack:
        runner_env = {"MODELRUNNER_METRICS_LISTEN": f"127.0.0.1:{self.metrics_port}"}
        base = self.env
        for name in names:
            self.env = {**base, **(runner_env if name == "runner" else {})}
            super().start((name,))
        self.env = base
        return self


@pytest.fixture(scope="module")
def seeded_registry(tiny_gguf: Path):
    with Registry() as registry:
        manifest, blobs = dmr_artifact(tiny_gguf.read_bytes())
        upload(registry.url, "ai/tiny", "latest", manifest, blobs)
        yield registry


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = MeteredStack(tmp_path_factory.mktemp("web-stack")).start()
    try:
        running.wait_healthy()
        yield running
    finally:
        running.stop()


@pytest.fixture
def browser(tmp_path: Path):
    with chromium(tmp_path / "profile") as driver:
        yield driver


def recorded(url: str, model: str) -> list[dict]:
    return httpx.get(f"{url}/engines/requests", params={"model": model}, timeout=30).json()["requests"]


def streamed_text(record: dict) -> str:
    """The content deltas of a recorded SSE answer."""
    text = ""
    for line in record["response"]["body"].splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                text += choice.get("delta", {}).get("content") or ""
    return text


def without_layout(text: str) -> str:
    return re.sub(r"[\s*`#+-]", "", text)


def test_the_page_pulls_chats_and_shows_what_runs(stack, seeded_registry, browser, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    shots = tmp_path / "screenshots"
    shots.mkdir()
    reference = f"{seeded_registry.host}/ai/tiny:latest"

    browser.get(stack.url)
    wait_for(browser, lambda d: d.find_element(By.ID, "view-models").is_displayed(), "the models view shows")
    assert console_errors(browser) == []

    # Pull: the progress bar fills and the model appears in the table.
    browser.find_element(By.ID, "pull-name").send_keys(reference)
    browser.find_element(By.CSS_SELECTOR, "#pull-form button").click()
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'#models-table tr[data-model="{reference}"]'),
             "the pulled model is listed")
    bar = browser.find_element(By.ID, "pull-bar")
    assert float(bar.get_attribute("value")) == float(bar.get_attribute("max")) > 1
    assert "bad" not in (browser.find_element(By.ID, "pull-text").get_attribute("class") or "")
    browser.save_screenshot(str(shots / "models.png"))

    # The rest switches views in the same page, whose load sampler has run since it opened.
    # Chat: the answer streams into the page, with its statistics.
    browser.execute_script("location.hash = '#chat'")
    wait_for(browser, lambda d: [o for o in d.find_elements(By.CSS_SELECTOR, "#chat-model option")
                                 if o.get_attribute("value") == reference], "the model is offered")
    Select(browser.find_element(By.ID, "chat-model")).select_by_value(reference)
    browser.find_element(By.ID, "chat-temperature").send_keys("0")
    browser.find_element(By.ID, "chat-max-tokens").send_keys("16")
    browser.find_element(By.ID, "chat-input").send_keys("Say hi\n")
    wait_for(browser, lambda d: "tokens" in text_of(d, ".message.assistant .stats"), "the answer finishes")
    stats = text_of(browser, ".message.assistant .stats")
    assert "16 tokens" in stats and "prompt tokens cached" in stats, stats
    assert browser.find_element(By.CSS_SELECTOR, ".message.user").text == "Say hi"
    # What the page shows is what the stream carried (the recorder kept the stream's SSE body), less
    # the whitespace and Markdown syntax the view turns into layout.
    answer = "".join(streamed_text(r) for r in recorded(stack.url, reference) if r["path"] == "/v1/chat/completions")
    shown = browser.execute_script("return document.querySelector('.message.assistant .content').textContent")
    assert answer and without_layout(shown) == without_layout(answer), (shown, answer)
    browser.save_screenshot(str(shots / "chat.png"))

    # Running: the model is loaded, with its slots.
    browser.execute_script("location.hash = '#running'")
    wait_for(browser, lambda d: d.find_elements(By.CSS_SELECTOR, f'#running-table tr[data-model="{reference}"]'),
             "the loaded model is listed")
    slots = text_of(browser, f'#running-table tr[data-model="{reference}"] td[data-field="slots"]')
    assert slots.startswith("0/") and int(slots.split("/")[1]) >= 1
    browser.save_screenshot(str(shots / "running.png"))

    # Requests: the chat is recorded, and opens to its request and answer.
    browser.execute_script("location.hash = '#requests'")
    wait_for(browser, lambda d: [e for e in d.find_elements(By.CSS_SELECTOR, "details.request summary")
                                 if "/v1/chat/completions" in e.text], "the chat is recorded")
    browser.execute_script(  # in one step: the list is redrawn every two seconds (keeping what is open)
        "[...document.querySelectorAll('details.request summary')]"
        ".find((s) => s.textContent.includes('/v1/chat/completions')).click()")
    wait_for(browser, lambda d: "Say hi" in text_of(d, "details.request[open]"), "the request opens to its body")
    browser.save_screenshot(str(shots / "requests.png"))

    # Load: after the traffic, the token-rate and latency charts have points.
    browser.execute_script("location.hash = '#load'")
    for title in ("Output tokens/s", "Time to first token", "KV-cache use"):
        wait_for(browser, lambda d, t=title: d.find_elements(By.CSS_SELECTOR, f'figure[data-metric="{t}"] polyline'),
                 f"the {title} chart draws")
    browser.save_screenshot(str(shots / "load.png"))
    assert console_errors(browser) == []


@pytest.fixture(scope="module")
def keyed_stack(tmp_path_factory):
    running = Stack(tmp_path_factory.mktemp("web-keyed"), {"MODELRUNNER_API_KEY": "page-secret"}).start()
    try:
        running.wait_healthy()
        yield running
    finally:
        running.stop()


def test_with_a_key_the_page_asks_for_it_and_keeps_it_in_the_tab(keyed_stack, browser, tmp_path: Path):
    from selenium.webdriver.common.by import By

    browser.get(keyed_stack.url)
    form = browser.find_element(By.ID, "key-form")
    wait_for(browser, lambda d: form.is_displayed(), "the page asks for the key")
    browser.find_element(By.ID, "key-input").send_keys("page-secret\n")
    wait_for(browser, lambda d: not form.is_displayed(), "the key is taken")
    wait_for(browser, lambda d: d.find_element(By.ID, "status").text == "", "the models load with the key")
    assert browser.execute_script("return sessionStorage.getItem('modelrunner.apiKey')") == "page-secret"
    assert browser.execute_script("return localStorage.length") == 0
    assert "page-secret" not in browser.get_cookies().__repr__()
    browser.save_screenshot(str(tmp_path / "keyed.png"))
    assert all("401" in error for error in console_errors(browser))  # only the first, keyless calls


@pytest.mark.slow
def test_the_running_table_shows_busy_slots_while_a_chat_streams(stack, browser, gemma_gguf, tmp_path: Path):
    """Gemma streams for minutes with 2000 tokens to go, so the table is seen busy; Stop frees the slot."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    package(f"127.0.0.1:{stack.ports['store']}", gemma_gguf, "ai/gemma3")
    browser.get(f"{stack.url}/#chat")
    wait_for(browser, lambda d: [o for o in d.find_elements(By.CSS_SELECTOR, "#chat-model option")
                                 if o.get_attribute("value") == "ai/gemma3:latest"], "Gemma is offered")
    Select(browser.find_element(By.ID, "chat-model")).select_by_value("ai/gemma3:latest")
    browser.find_element(By.ID, "chat-max-tokens").send_keys("2000")
    browser.find_element(By.ID, "chat-input").send_keys("Tell me a long story about the sea.\n")
    wait_for(browser, lambda d: text_of(d, ".message.assistant .content").strip(), "the answer starts streaming",
             timeout=180)
    browser.execute_script("location.hash = '#running'")
    row = '#running-table tr[data-model="ai/gemma3:latest"] td[data-field="slots"]'
    wait_for(browser, lambda d: text_of(d, row).startswith("1/"), "one slot busy while the chat streams")
    browser.save_screenshot(str(tmp_path / "running-busy.png"))
    browser.execute_script("location.hash = '#chat'")
    browser.find_element(By.ID, "chat-stop").click()
    wait_for(browser, lambda d: text_of(d, ".message.assistant .stats") == "stopped", "the chat stops")
    browser.execute_script("location.hash = '#running'")
    wait_for(browser, lambda d: text_of(d, row).startswith("0/"), "the slot is free again")


def test_at_phone_width_no_view_scrolls_sideways(stack, tmp_path: Path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    with chromium(tmp_path / "profile", width=390, height=844) as phone:
        phone.get(stack.url)
        for view in ("models", "running", "load", "requests", "chat"):
            phone.execute_script(f"location.hash = '#{view}'")
            wait_for(phone, lambda d, v=view: d.find_element(By.ID, f"view-{v}").is_displayed(), f"{view} shows")
            width = phone.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]")
            assert width[0] <= width[1], (view, width)
            phone.save_screenshot(str(tmp_path / f"phone-{view}.png"))
        # The keyboard reaches the views: focus the first link and follow it with Enter.
        phone.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
        assert phone.switch_to.active_element.get_attribute("data-view") == "models"
        phone.switch_to.active_element.send_keys(Keys.ENTER)
        wait_for(phone, lambda d: d.find_element(By.ID, "view-models").is_displayed(), "Enter opens the view")

"""The web chat page at ``/``: served as HTML, and driven end to end in real headless Chromium.

The browser tests start a real uvicorn server on a free loopback port (in a thread, with the tiny
deterministic pipeline) and drive Debian's chromium through selenium. They skip when selenium, chromium
or chromedriver is missing (CI: ``apt-get install chromium chromium-driver``; selenium is a dev extra).
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from fastapi.testclient import TestClient
from service_helpers import API_KEY, TopRecordGenerator, make_app

from mktod.errors import GeneratorUnavailable
from mktod.generators.base import GeneratorInput

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement

KEY = {"X-API-Key": API_KEY}
HOSTILE_NAME = "<img src=x onerror=alert(1)>"
HOSTILE_AREA = "<script>window.pwned = 1</script>"
HOSTILE_ID = "<svg onload=alert(2)>"
# Elements the hostile strings would create if the page ever parsed them as markup.
INJECTED = ", ".join(f"#conversation {tag}" for tag in ("img", "script", "svg", "i"))
MAX_CHARS = 200
WAIT_S = 20.0


# --- without a browser -------------------------------------------------------------------------------


def test_root_serves_the_page(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path)) as client:
        r = client.get("/")
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "text/html; charset=utf-8"
        page = r.text
        assert "<title>MK-TOD chat</title>" in page and 'id="new-conversation"' in page
        # The inline script and style carry the nonce the CSP names; no other script may run.
        csp = r.headers["content-security-policy"]
        nonce = re.search(r"'nonce-([^']+)'", csp)
        assert nonce is not None and "__CSP_NONCE__" not in page
        assert page.count(f'nonce="{nonce.group(1)}"') == 2
        assert client.get("/").headers["content-security-policy"] != csp
        # Offline: nothing loads from elsewhere. And no code path that parses strings as markup.
        assert not re.search(r"(src|href)=\"(https?:)?//", page)
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
            assert sink not in page
        # A page, not a JSON endpoint: not in the OpenAPI schema.
        assert "/" not in client.get("/openapi.json").json()["paths"]


# --- the live server and the browser -----------------------------------------------------------------


class SwitchableGenerator(TopRecordGenerator):
    """Test fixture: answers like TopRecordGenerator until a test takes the backend down."""

    def __init__(self) -> None:
        self.down = False

    def generate(self, batch: Sequence[GeneratorInput]) -> list[str]:
        if self.down:
            raise GeneratorUnavailable("test: the generator backend is switched off")
        return super().generate(batch)


@dataclass(frozen=True)
class LiveServer:
    url: str
    generator: SwitchableGenerator


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    import uvicorn

    generator = SwitchableGenerator()
    app = make_app(tmp_path_factory.mktemp("web"), generator, max_message_chars=MAX_CHARS)
    # Bound here and handed over, so no other process can take the port in between.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            pytest.fail(f"uvicorn did not start on 127.0.0.1:{port} within 30 s")
        time.sleep(0.05)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", generator)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (a dev extra)")
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    chromedriver = shutil.which("chromedriver")
    if chromium is None or chromedriver is None:
        missing = " and ".join(
            n for n, p in (("chromium", chromium), ("chromedriver", chromedriver)) if not p
        )
        pytest.skip(f"{missing} not on PATH (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    # An explicit driver path: selenium-manager never tries to download one (the machines are offline).
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass(frozen=True)
class ShownRecord:
    id: str
    rank: str
    score: str
    tags: dict[str, str]
    fields: dict[str, str]


@dataclass(frozen=True)
class ShownMessage:
    role: str
    text: str
    records: tuple[ShownRecord, ...]


def _wait(driver: WebDriver, what: str, condition: Callable[[WebDriver], Any]) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, WAIT_S).until(condition, message=f"waited {WAIT_S:.0f} s for {what}")


def _css(root: WebDriver | WebElement, selector: str) -> WebElement:
    from selenium.webdriver.common.by import By

    return root.find_element(By.CSS_SELECTOR, selector)


def _all(root: WebDriver | WebElement, selector: str) -> list[WebElement]:
    from selenium.webdriver.common.by import By

    return root.find_elements(By.CSS_SELECTOR, selector)


def _ready(driver: WebDriver) -> bool:
    return bool(_css(driver, "#session").text) and _css(driver, "#send").is_enabled()


def _open(driver: WebDriver, server: LiveServer, fresh: bool = True) -> None:
    driver.get(server.url + "/")
    if fresh:
        driver.execute_script("localStorage.clear()")
        driver.get(server.url + "/")
    _wait(driver, "the page to load", _ready)


def _error(driver: WebDriver) -> str:
    box = _css(driver, "#error")
    return _css(box, "#error-text").text if box.is_displayed() else ""


def _bottom_in_view(driver: WebDriver, selector: str) -> bool:
    """Whether the element's bottom edge is on screen, above the sticky footer (which it counts in)."""
    script = (
        "const r = arguments[0].getBoundingClientRect(), f = document.querySelector('footer');"
        "const limit = f.contains(arguments[0]) ? innerHeight : f.getBoundingClientRect().top;"
        "return [r.bottom, limit];"
    )
    bottom, limit = driver.execute_script(script, _css(driver, selector))
    return bool(0 < bottom <= limit + 1)


def _send(driver: WebDriver, text: str, enter: bool = False) -> None:
    """Type and send a message (the Send button, or the Enter key); wait for the reply or for an error."""
    from selenium.webdriver.common.keys import Keys

    before = len(_all(driver, "#conversation .msg.assistant"))
    box = _css(driver, "#message")
    box.clear()
    box.send_keys(text)
    if enter:
        box.send_keys(Keys.ENTER)
    else:
        _css(driver, "#send").click()
    _wait(
        driver,
        f"a reply to {text!r}",
        lambda d: _ready(d) and (len(_all(d, "#conversation .msg.assistant")) > before or _error(d)),
    )


def _record(el: WebElement) -> ShownRecord:
    tags = {t.get_attribute("data-kind") or "": _css(t, ".tag-value").text for t in _all(el, ".tag")}
    fields = {dd.get_attribute("data-field") or "": dd.text for dd in _all(el, ".fields dd")}
    return ShownRecord(
        id=_css(el, ".record-id").text,
        rank=_css(el, ".record-rank").text,
        score=_css(el, ".record-score").text,
        tags=tags,
        fields=fields,
    )


def _conversation(driver: WebDriver) -> list[ShownMessage]:
    out = []
    for msg in _all(driver, "#conversation .msg"):
        role = "user" if "user" in (msg.get_attribute("class") or "").split() else "assistant"
        records = tuple(_record(r) for r in _all(msg, ".record"))
        out.append(ShownMessage(role, _css(msg, ".msg-text").text, records))
    return out


def _session_id(driver: WebDriver) -> str | None:
    value: str | None = driver.execute_script("return localStorage.getItem('mktod.sessionId')")
    return value


def _assert_matches_api(shown: ShownRecord, api: dict[str, Any]) -> None:
    assert shown.id == api["id"] and shown.rank == f"#{api['rank']}"
    assert shown.score == f"score {api['score']:.3f}"
    tags = api["tags"]
    assert shown.tags == {
        "order": tags["order"],
        "confidence": tags["confidence"],
        "co-occurrence": tags["cooccurrence"],
    }
    assert shown.fields == api["fields"]


def _assert_no_alert(driver: WebDriver) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        text = driver.switch_to.alert.text
    except NoAlertPresentException:
        return
    pytest.fail(f"a hostile KB string ran script: alert({text!r})")


# --- in the browser ----------------------------------------------------------------------------------


def test_chat_shows_records_follows_kb_edits_and_survives_reload(
    browser: WebDriver, live_server: LiveServer
) -> None:
    _open(browser, live_server)
    assert _conversation(browser) == [] and _css(browser, "#empty").is_displayed()
    assert _css(browser, "#session").text == "new conversation"

    _send(browser, "where is kitsune sushi bar ?")
    assert _error(browser) == ""
    first = _conversation(browser)
    assert [(m.role, m.text) for m in first] == [
        ("user", "where is kitsune sushi bar ?"),
        ("assistant", "kitsune sushi bar is in the centre"),
    ]
    top = first[1].records[0]
    assert top.id == "kitsune_sushi_bar" and top.rank == "#1"
    assert top.tags["order"] == "<1th-entity>" and top.tags["co-occurrence"] == "<old-entity>"
    assert top.fields["area"] == "centre"
    sid = _session_id(browser)
    assert sid and _css(browser, "#session").text == f"session {sid}"
    # The page shows exactly what the API returned: every record, score and tag.
    api_records = httpx.get(f"{live_server.url}/v1/sessions/{sid}").json()["messages"][1]["records"]
    assert len(first[1].records) == len(api_records) > 1
    for shown, api in zip(first[1].records, api_records, strict=True):
        _assert_matches_api(shown, api)

    record = httpx.get(f"{live_server.url}/v1/kb/records/kitsune_sushi_bar").json()
    fields = {**record["fields"], "area": "harbour quarter"}
    r = httpx.put(
        f"{live_server.url}/v1/kb/records/kitsune_sushi_bar",
        json={"domain": record["domain"], "fields": fields},
        headers=KEY,
    )
    assert r.status_code == 200, r.text
    _send(browser, "and where is kitsune sushi bar now ?", enter=True)
    assert _error(browser) == ""
    second = _conversation(browser)
    assert second[3].text == "kitsune sushi bar is in the harbour quarter"
    assert second[3].records[0].fields["area"] == "harbour quarter"

    browser.refresh()
    _wait(browser, "the history after a reload", lambda d: _ready(d) and len(_all(d, ".msg")) == 4)
    assert _conversation(browser) == second
    assert _session_id(browser) == sid and not _css(browser, "#empty").is_displayed()

    _css(browser, "#new-conversation").click()
    assert _conversation(browser) == [] and _session_id(browser) is None
    browser.refresh()
    _wait(browser, "the page to load", _ready)
    assert _conversation(browser) == [] and _css(browser, "#session").text == "new conversation"


def test_hostile_kb_strings_are_shown_as_text(browser: WebDriver, live_server: LiveServer) -> None:
    fields = {"name": HOSTILE_NAME, "area": HOSTILE_AREA, "food": "zanzibari"}
    body = {"id": HOSTILE_ID, "domain": "<i>restaurant</i>", "fields": fields}
    r = httpx.post(f"{live_server.url}/v1/kb/records", json=body, headers=KEY)
    assert r.status_code == 201, r.text
    try:
        _open(browser, live_server)
        _send(browser, f"is {HOSTILE_NAME} a zanzibari place ?")
        _assert_no_alert(browser)
        assert _error(browser) == ""
        for reload in (False, True):
            if reload:  # the history is rendered by another code path: check it too
                browser.refresh()
                _wait(
                    browser, "the history after a reload", lambda d: _ready(d) and len(_all(d, ".msg")) == 2
                )
                _assert_no_alert(browser)
            user, reply = _conversation(browser)
            assert user.text == f"is {HOSTILE_NAME} a zanzibari place ?"
            assert reply.text == f"{HOSTILE_NAME} is in the {HOSTILE_AREA}"
            top = reply.records[0]
            assert top.id == HOSTILE_ID and top.fields == fields
            assert _css(browser, ".record-domain").text == "<i>restaurant</i>"
            # Nothing was parsed as markup, so nothing ran.
            assert _all(browser, INJECTED) == []
            assert browser.execute_script("return window.pwned") is None
    finally:
        httpx.delete(f"{live_server.url}/v1/kb/records/{HOSTILE_ID}", headers=KEY)


def test_api_errors_are_shown_on_the_page(browser: WebDriver, live_server: LiveServer) -> None:
    _open(browser, live_server)
    too_long = "x" * (MAX_CHARS + 1)
    _send(browser, too_long)
    error = _error(browser)
    assert "Error 422 (message_too_long)" in error and f"the limit is {MAX_CHARS}" in error
    # The unanswered message is not left in the conversation, and the typed text is given back.
    assert _conversation(browser) == []
    assert _css(browser, "#message").get_attribute("value") == too_long

    live_server.generator.down = True
    try:
        _send(browser, "where is bramble kitchen ?")
    finally:
        live_server.generator.down = False
    error = _error(browser)
    assert "Error 503 (generator_unavailable)" in error and "retry after 30 s" in error
    assert _conversation(browser) == []
    for i in range(4):  # a conversation longer than the window: the error still shows
        _send(browser, f"where is bramble kitchen ? ({i})")
    live_server.generator.down = True
    try:
        _send(browser, "and its phone ?")
    finally:
        live_server.generator.down = False
    assert "Error 503" in _error(browser) and _bottom_in_view(browser, "#error")
    assert len(_conversation(browser)) == 8

    _send(browser, "where is bramble kitchen ?")
    assert _error(browser) == ""
    assert [m.text for m in _conversation(browser)][-1] == "bramble kitchen is in the north"
    assert _bottom_in_view(browser, "#conversation .msg:last-child")

    # A saved session the server no longer has: said so, and forgotten.
    sid = _session_id(browser)
    assert httpx.delete(f"{live_server.url}/v1/sessions/{sid}").status_code == 204
    browser.refresh()
    _wait(browser, "the page to load", _ready)
    error = _error(browser)
    assert "Error 404 (not_found)" in error and "no longer on the server" in error
    assert _session_id(browser) is None and _conversation(browser) == []
    _css(browser, "#error-close").click()
    assert _error(browser) == ""

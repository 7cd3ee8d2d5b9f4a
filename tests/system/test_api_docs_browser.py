"""The API documentation pages in a real browser (Playwright driving Debian's headless Chromium)
against the server running under uvicorn on a free port (SQLite, the test Redis; no lab):

- /docs (Swagger UI 5) renders the OpenAPI 3.1 document: operations are listed, a known path's
  text is in the DOM, and no "Unable to render this definition" error;
- /redoc (Redoc) renders the same operations;
- neither page reports a Content-Security-Policy violation (their scripts are files of ours,
  Redoc's run-time styles carry the response's nonce), and neither asks anything of another
  origin (the assets are vendored: vcenter/api/static/vendor/).
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
import uvicorn

from tests.apihelpers import wait_for
from tests.conftest import make_settings, migrated_sqlite
from vcenter.api.app import create_app

CHROMIUM = "/usr/bin/chromium"
KNOWN_PATH = "/api/v1/vms/{vm_id}/power/on"

# Every CSP violation a page sees, reported to its console (see tests/e2e/test_dashboard_browser.py).
_REPORT_CSP = """document.addEventListener('securitypolicyviolation', (e) =>
    console.error('CSP violation: ' + e.violatedDirective + ' blocked ' + e.blockedURI + ' at ' + e.sourceFile + ':' + e.lineNumber));"""


@pytest.fixture
def server(tmp_path):
    settings = make_settings(tmp_path, database_url=migrated_sqlite(tmp_path / "vcenter.db"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    wait_for(lambda: running.started, 20, what="uvicorn started")
    yield f"http://127.0.0.1:{port}"
    running.should_exit = True
    thread.join(10)


@pytest.mark.timeout(180)
def test_docs_and_redoc_render_the_operations(server):
    from playwright.sync_api import sync_playwright  # pip install -e .[test]

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/install.sh installs Debian's chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        problems: list[str] = []
        foreign: list[str] = []
        context.add_init_script(_REPORT_CSP)
        context.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text or "CSP violation" in m.text else None)
        context.on("request", lambda r: foreign.append(r.url) if not r.url.startswith((server, "data:", "blob:")) else None)
        page = context.new_page()
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))

        page.goto(server + "/docs")
        page.wait_for_selector("#swagger-ui .opblock", timeout=60000)
        assert "Unable to render" not in page.inner_text("#swagger-ui")
        # Swagger UI renders only the operations in view: narrow them to the vms tag (its filter box).
        page.fill("#swagger-ui input.operation-filter-input", "vms")
        known = page.wait_for_selector(f'#swagger-ui .opblock-summary-path[data-path="{KNOWN_PATH}"]', timeout=30000)
        assert known.inner_text().replace("\u200b", "") == KNOWN_PATH  # its <wbr> break points aside

        page.goto(server + "/redoc")
        # Redoc lists each operation in its menu and shows its path in the operation's panel.
        page.wait_for_selector("#redoc-root li[data-item-id]", timeout=60000)
        wait_for(lambda: KNOWN_PATH in page.inner_text("#redoc-root").replace("\u200b", ""), 60, interval=0.5, what="the known path in Redoc")
        assert "Something went wrong" not in page.inner_text("#redoc-root")
        assert page.locator("#redoc-root li[data-item-id^='tag/']").count() > 10  # the menu's tags
        browser.close()
    assert problems == [], problems
    assert foreign == [], foreign

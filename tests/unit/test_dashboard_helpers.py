"""Small rules of the dashboard: SSE framing, the login redirect target, CSRF tokens,
certificate thumbprints as the agent computes them."""

from __future__ import annotations

from vcenter.dashboard.console import thumbprint_of_der
from vcenter.dashboard.live import sse
from vcenter.dashboard.pages import _safe_next
from vcenter.dashboard.web import csrf_for


def test_sse_frames_multiline_html_as_one_event():
    assert sse("tasks", "<tr>\n<td>1</td>\n</tr>\n") == "event: tasks\ndata: <tr>\ndata: <td>1</td>\ndata: </tr>\n\n"
    assert sse("events", "") == "event: events\ndata: \n\n"


def test_login_redirects_only_inside_the_dashboard():
    assert _safe_next("/ui/vm/3?tab=monitor") == "/ui/vm/3?tab=monitor"
    for target in ("https://evil.example/ui", "//evil.example/ui", "/api/v1/users", "", "javascript:alert(1)"):
        assert _safe_next(target) == "/ui"


def test_csrf_token_is_bound_to_the_session():
    assert csrf_for("session-a") == csrf_for("session-a")
    assert csrf_for("session-a") != csrf_for("session-b")
    assert len(csrf_for("x")) == 64


def test_thumbprint_matches_the_agents_spelling(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from workers.agent.identity import load_or_create_certificate

    expected = load_or_create_certificate(tmp_path, "h1")
    der = x509.load_pem_x509_certificate((tmp_path / "agent.crt").read_bytes()).public_bytes(Encoding.DER)
    assert thumbprint_of_der(der) == expected


def test_every_asset_is_served_by_the_server_itself():
    """No CDN: every script and stylesheet a template names is a file under static/."""
    import re
    from pathlib import Path

    import vcenter.dashboard as dashboard

    root = Path(dashboard.__file__).parent
    found = 0
    for template in (root / "templates").glob("*.html"):
        for url in re.findall(r'<(?:script|link)[^>]+(?:src|href)="([^"]+)"', template.read_text()):
            assert url.startswith("/ui/static/"), (template.name, url)
            assert (root / "static" / url.removeprefix("/ui/static/")).is_file(), (template.name, url)
            found += 1
        text = template.read_text()
        assert "http://" not in text and "https://" not in text, template.name
    assert found >= 8
    for vendored in ("htmx", "xterm", "uplot"):
        assert (root / "static" / "vendor" / vendored / "LICENSE").is_file()

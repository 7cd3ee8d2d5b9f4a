"""The request edge's pure decisions: the client address behind proxies, the body guard's
header rules, the security headers, the /metrics credential; and the dashboard's templates and
scripts hold nothing the Content-Security-Policy forbids (inline script, inline handlers, style
attributes, eval-based htmx features)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from vcenter.api.app import bearer_of, is_metrics_token, redoc_page, swagger_page
from vcenter.api.client_address import client_address, forwarded_scheme, parse_address, parse_trusted
from vcenter.api.guards import content_type_refusal, declared_too_large, has_nul, target_has_nul
from vcenter.api.headers import content_security_policy, security_headers

DASHBOARD = Path(__file__).resolve().parents[2] / "vcenter" / "dashboard"
PROXIES = parse_trusted(["10.0.0.0/24", "2001:db8::/64"])


# --- client address ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "peer, xff, expected",
    [
        # an untrusted peer is the client, whatever it writes
        ("198.51.100.7", ["1.2.3.4"], "198.51.100.7"),
        ("198.51.100.7", [], "198.51.100.7"),
        ("testclient", ["1.2.3.4"], "testclient"),
        # behind a trusted proxy: the rightmost untrusted entry (the client's own entries are left of it)
        ("10.0.0.2", ["203.0.113.5"], "203.0.113.5"),
        ("10.0.0.2", ["1.2.3.4, 203.0.113.5"], "203.0.113.5"),
        ("10.0.0.2", ["1.2.3.4, 203.0.113.5, 10.0.0.7"], "203.0.113.5"),
        ("10.0.0.2", ["1.2.3.4", "203.0.113.5, 10.0.0.7"], "203.0.113.5"),  # two headers are one list
        ("10.0.0.2", ["203.0.113.5:4711"], "203.0.113.5"),
        ("2001:db8::1", ["[2001:db8:1::9]:443"], "2001:db8:1::9"),
        ("::ffff:10.0.0.2", ["203.0.113.5"], "203.0.113.5"),  # IPv4-mapped peer of a dual-stack socket
        # a trusted proxy that sent nothing, or only trusted hops: the leftmost address we know
        ("10.0.0.2", [], "10.0.0.2"),
        ("10.0.0.2", ["10.0.0.9, 10.0.0.7"], "10.0.0.9"),
        # garbage where an address belongs: stop at the proxy that forwarded it
        ("10.0.0.2", ["203.0.113.5, unknown"], "10.0.0.2"),
        ("10.0.0.2", ["evil, 203.0.113.5"], "203.0.113.5"),
    ],
)
def test_client_address_believes_x_forwarded_for_only_from_trusted_proxies(peer, xff, expected):
    assert client_address(peer, xff, PROXIES) == expected


def test_no_trusted_proxy_means_the_peer_always():
    assert client_address("127.0.0.1", ["6.6.6.6"], parse_trusted([""])) == "127.0.0.1"
    assert client_address(None, ["6.6.6.6"], ()) is None


def test_forwarded_scheme_only_from_a_trusted_peer():
    assert forwarded_scheme("10.0.0.2", ["https"], PROXIES, "http") == "https"
    assert forwarded_scheme("10.0.0.2", ["http, https"], PROXIES, "http") == "https"  # the nearest proxy's value
    assert forwarded_scheme("10.0.0.2", ["https"], PROXIES, "ws") == "wss"
    assert forwarded_scheme("198.51.100.7", ["https"], PROXIES, "http") == "http"
    assert forwarded_scheme("10.0.0.2", ["gopher"], PROXIES, "http") == "http"


def test_trusted_proxy_entries_are_checked():
    with pytest.raises(ValueError):
        parse_trusted(["10.0.0.0/33"])
    assert parse_address("unknown") is None and str(parse_address("[::1]:80")) == "::1"


def test_the_trusted_proxies_setting_fails_on_a_typo():
    from vcenter.core.settings import Settings

    assert Settings(trusted_proxies=" 10.0.0.1 , 192.168.0.0/16").trusted_proxies == "10.0.0.1/32,192.168.0.0/16"
    with pytest.raises(ValueError):
        Settings(trusted_proxies="10.0.0.300")
    with pytest.raises(ValueError):
        Settings(metrics_listen="9464")


# --- body guard ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers, refused",
    [
        ([(b"content-type", b"application/json")], False),
        ([(b"content-type", b'multipart/form-data; boundary="a,b"')], False),  # a comma inside a quoted parameter
        ([], False),
        ([(b"content-type", b"application/json"), (b"content-type", b"text/plain")], True),
        ([(b"content-type", b"application/json"), (b"content-type", b"application/json")], True),
        ([(b"content-type", b"application/json, text/plain")], True),
        ([(b"content-type", b"text/plain,application/json")], True),
    ],
)
def test_more_than_one_media_type_is_refused(headers, refused):
    verdict = content_type_refusal(headers)
    assert (verdict is not None) == refused
    if refused:
        assert verdict[0]["status"] == 415 and b"AMBIGUOUS_CONTENT_TYPE" in verdict[1]["body"]


def test_declared_length_and_nul_markers():
    assert declared_too_large([(b"content-length", b"10"), (b"content-length", b"999999")], 1000)
    assert not declared_too_large([(b"content-length", b"1000")], 1000)
    assert all(has_nul(body) for body in (b'{"a":"x\\u0000"}', b"a=x%00", b"a\x00"))
    assert not has_nul(b'{"a": "x\\u0041", "b": "%2500"}')
    assert target_has_nul({"query_string": b"a=%00", "path": "/x"}) and target_has_nul({"query_string": b"", "path": "/x\x00"})


# --- headers --------------------------------------------------------------------------------


def test_security_headers():
    api = dict(security_headers("/api/v1/vms", "http"))
    assert api[b"x-frame-options"] == b"DENY" and api[b"x-content-type-options"] == b"nosniff"
    assert api[b"referrer-policy"] == b"no-referrer" and api[b"cache-control"] == b"no-store"
    assert b"strict-transport-security" not in api
    assert b"strict-transport-security" in dict(security_headers("/ui", "https"))
    assert b"cache-control" not in dict(security_headers("/ui/static/app.js", "https"))
    csp = content_security_policy("abc")
    directives = {d.split()[0]: d.split()[1:] for d in csp.split("; ")}
    assert directives["script-src"] == ["'self'"]
    assert directives["style-src"] == ["'self'", "'nonce-abc'"]
    assert directives["frame-ancestors"] == ["'none'"] and directives["object-src"] == ["'none'"]
    assert "unsafe" not in csp and "blob:" not in csp and "sha256" not in csp
    # /redoc, and it alone: blob: workers and the hashes of its bundle's two load-time <style>s.
    redoc = {d.split()[0]: d.split()[1:] for d in dict(security_headers("/redoc", "http", "n1"))[b"content-security-policy"].decode().split("; ")}
    assert redoc["worker-src"] == ["'self'", "blob:"] and redoc["style-src"][:2] == ["'self'", "'nonce-n1'"] and len(redoc["style-src"]) == 4
    assert redoc["script-src"] == ["'self'"] and "unsafe" not in str(redoc)
    for path in ("/redoc/x", "/redocs", "/docs", "/ui/vm/1"):
        assert b"blob:" not in dict(security_headers(path, "http"))[b"content-security-policy"], path


def test_metrics_credential():
    assert bearer_of("Bearer abc") == "abc" and bearer_of("bearer  abc ") == "abc"
    assert bearer_of("Basic abc") is None and bearer_of(None) is None and bearer_of("Bearer ") is None
    assert is_metrics_token("s3cret", "s3cret")
    assert not is_metrics_token("s3cret", None) and not is_metrics_token(None, None) and not is_metrics_token("x", "s3cret")


# --- no inline script or style anywhere the CSP applies ---------------------------------------


class _Inline(HTMLParser):
    """Collects what a CSP without 'unsafe-inline'/'unsafe-eval' would block."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        names = dict(attrs)
        if tag == "script":
            self._in_script = True
            if "src" not in names:
                self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style> block")
        for name, value in attrs:
            if name.startswith("on") or name.startswith("hx-on"):
                self.found.append(f"inline handler {name}")
            if name == "style":
                self.found.append("style attribute")
            if name in ("hx-vals", "hx-headers", "hx-vars") and value and value.strip().startswith(("js:", "javascript:")):
                self.found.append(f"{name} evaluated as script")
            if name == "hx-vars":
                self.found.append("hx-vars (always eval)")
            if name == "hx-trigger" and value and "[" in value:
                self.found.append("hx-trigger filter (eval)")
            if name in ("href", "src", "action") and value and value.strip().lower().startswith("javascript:"):
                self.found.append("javascript: URL")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.found.append("inline script text")


def _inline(html: str) -> list[str]:
    parser = _Inline()
    # Jinja expressions are not HTML: blank them so the parser sees the markup around them.
    parser.feed(re.sub(r"{[{%#].*?[}%#]}", "", html, flags=re.S))
    return parser.found


def test_the_parser_sees_what_it_must():
    assert _inline('<script>alert(1)</script><b onclick="x()" style="color:red">') == ["inline <script>", "inline script text", "inline handler onclick", "style attribute"]
    assert _inline("<select hx-vals='js:{a: 1}'></select><style>b{}</style>") == ["hx-vals evaluated as script", "<style> block"]


@pytest.mark.parametrize("template", sorted(p.name for p in (DASHBOARD / "templates").glob("*.html")))
def test_no_template_holds_what_the_csp_forbids(template):
    assert _inline((DASHBOARD / "templates" / template).read_text()) == []


def test_the_api_docs_pages_have_no_inline_script():
    assert _inline(swagger_page("/openapi.json")) == []
    assert _inline(redoc_page("/openapi.json", "n0nce")) == []


def test_htmx_is_configured_without_eval_or_injected_styles():
    base = (DASHBOARD / "templates" / "base.html").read_text()
    meta = re.search(r"<meta name=\"htmx-config\" content='([^']*)'>", base)
    assert meta, "base.html configures htmx with a meta tag"
    import json

    config = json.loads(meta.group(1))
    assert config["includeIndicatorStyles"] is False and config["allowEval"] is False and config["allowScriptTags"] is False
    assert base.index('name="htmx-config"') < base.index("htmx.min.js")


def test_our_scripts_write_no_inline_style_or_eval():
    for script in ("app.js", "console.js"):
        text = (DASHBOARD / "static" / script).read_text()
        assert "eval(" not in text and "new Function" not in text, script
        assert not re.search(r"setAttribute\(\s*['\"]style['\"]", text), script
        assert "style=" not in text, script

"""ASGI entry point for uvicorn: `vcenter.api.asgi:app`.

Started by `vcenter serve`, which turns uvicorn's own X-Forwarded-For handling off
(``proxy_headers=False``): the application decides client addresses itself, believing the
header only from ``VCENTER_TRUSTED_PROXIES``. Running uvicorn by hand, pass
``--no-proxy-headers`` too, or uvicorn rewrites the client from any loopback peer's header first.
"""

from vcenter.api.app import create_app

app = create_app()

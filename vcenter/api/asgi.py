"""ASGI entry point for uvicorn: `vcenter.api.asgi:app`.

Started by `vcenter serve`, which turns uvicorn's own X-Forwarded-For handling off
(``proxy_headers=False``): the application decides client addresses itself, believing the
header only from ``VCENTER_TRUSTED_PROXIES``. Running uvicorn by hand, pass
``--no-proxy-headers`` too, or uvicorn rewrites the client from any loopback peer's header first.
"""

import logging

from vcenter.api.app import create_app
from vcenter.core.logging import setup_logging
from vcenter.core.settings import get_settings

# `vcenter serve --workers N` starts each worker as a new interpreter, which has not run the
# command's logging set-up: uvicorn's lines and ours would be lost below WARNING.
if not logging.getLogger().handlers:
    setup_logging(get_settings().log_level, get_settings().log_json)

app = create_app()

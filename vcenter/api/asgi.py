"""ASGI entry point for uvicorn: `vcenter.api.asgi:app`."""
from vcenter.api.app import create_app

app = create_app()

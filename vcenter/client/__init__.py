"""A small typed client of virtcenter's public REST API (/api/v1), for the operator CLI, the
tests and scripts. It speaks HTTP only (httpx): it imports none of the server's modules, nor
numpy, SQLAlchemy, FastAPI or Celery (an import-linter contract in pyproject.toml keeps it so).

- vcenter.client.api: ``Client`` (bearer credential, paging, task waits, server-sent events)
  and ``ApiError`` (the stable error ``code`` of a refusal, from either error body shape);
- vcenter.client.models: typed results (``Task``, ``Event``, ``InventoryItem``);
- vcenter.client.config: contexts (server, credential) kept in the user's config directory;
- vcenter.client.paths: govc-style inventory paths (``/dc1/vm/web1``) resolved over the API.
"""

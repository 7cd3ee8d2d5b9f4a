"""What every virtcenter process tells Prometheus and a prober about itself: the metric
families (vcenter.observability.metrics), the per-process health and metrics listener
(vcenter.observability.listener), the commit hook that counts only committed changes
(vcenter.observability.committed) and the Celery processes' liveness and task counters
(vcenter.observability.celery_probe).

It knows core only: the services, the agent and the API record into it; it imports none of
them (pyproject.toml's import-linter contract)."""

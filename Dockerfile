# One image for every virtcenter process: api, worker, beat, ha, migrate and the host agent.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# libvirt-dev/pkg-config/gcc build libvirt-python; libvirt-clients and qemu-utils are
# used by the agent (virsh, qemu-img).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libvirt-dev pkg-config gcc libvirt-clients qemu-utils \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first so that code changes do not re-resolve them.
COPY pyproject.toml ./
COPY README.md* ./
COPY vcenter ./vcenter
COPY workers ./workers
COPY templates_store ./templates_store
RUN pip install '.[agent]'

# Alembic needs its ini and scripts at run time (`vcenter db upgrade`).
COPY alembic.ini ./
COPY migrations ./migrations

RUN useradd --system --home-dir /app --shell /usr/sbin/nologin vcenter \
 && install -d -m 0700 -o vcenter /var/lib/virtcenter/keys
# (the keys volume takes this owner on first mount: the command signing key, the TLS certificate)
USER vcenter

ENV VCENTER_API_HOST=0.0.0.0 \
    VCENTER_API_PORT=8080
EXPOSE 8080

ENTRYPOINT ["vcenter"]
CMD ["serve"]

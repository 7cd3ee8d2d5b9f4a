# One image for the virtcenter server processes: api, worker, beat, ha, migrate (db upgrade).
# The host agent is no container: it runs on each hypervisor as a systemd service
# (docs/operations.md says why).
#
# Built from Debian packages on a base given as a build argument: here, where no registry is
# reachable, a Debian root made by debootstrap and imported into podman (deploy/build-images.sh);
# with a registry, `--build-arg BASE=debian:bookworm`. apt uses the image's own sources unless
# the build mounts the host's (podman build -v HOST_SOURCES:/etc/apt/sources.list.d:ro); pip
# uses the CA bundle mounted at /run/host-ca if there is one. Neither stays in the image.
ARG BASE=localhost/debian:bookworm

# --- builder: compilers and headers, wheels of every dependency --------------------------------
FROM ${BASE} AS builder
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc pkg-config libvirt-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
WORKDIR /src
# Dependencies first: a code change reuses these layers (the heavy ones: libvirt-python compiles;
# its setup.py needs the wheel package to make a wheel).
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["agent"]))' > /tmp/requirements.txt \
 && if [ -f /run/host-ca/ca-certificates.crt ]; then export PIP_CERT=/run/host-ca/ca-certificates.crt; fi \
 && /opt/venv/bin/pip install wheel \
 && /opt/venv/bin/pip wheel --wheel-dir /wheels -r /tmp/requirements.txt \
 && /opt/venv/bin/pip install --no-index --find-links /wheels -r /tmp/requirements.txt
COPY README.md ./
COPY vcenter ./vcenter
COPY workers ./workers
COPY templates_store ./templates_store
COPY migrations ./migrations
RUN if [ -f /run/host-ca/ca-certificates.crt ]; then export PIP_CERT=/run/host-ca/ca-certificates.crt; fi \
 && /opt/venv/bin/pip wheel --no-deps --wheel-dir /app-wheel .

# --- runtime: Python and the shared libraries only, no compiler ---------------------------------
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:/usr/sbin:/usr/bin:/sbin:/bin
# python3: the interpreter the builder's venv points at; libvirt0: libvirt-python's library.
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libvirt0 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
# The dependencies, installed from the builder's wheels (changes only with pyproject.toml) ...
COPY --from=builder /opt/venv /opt/venv
# ... then this release's own wheel.
COPY --from=builder /app-wheel /tmp/app-wheel
RUN pip install --no-index --no-deps --no-compile --disable-pip-version-check /tmp/app-wheel/*.whl \
 && rm -rf /tmp/app-wheel

WORKDIR /app
# (`vcenter db upgrade` runs the migrations the wheel carries: the `migrations` package)

RUN useradd --system --home-dir /app --shell /usr/sbin/nologin vcenter \
 && install -d -m 0700 -o vcenter /var/lib/virtcenter/keys
# (the keys volume takes this owner on first mount: the command signing key, the TLS certificate)
USER vcenter

ENV VCENTER_API_HOST=0.0.0.0 \
    VCENTER_API_PORT=8080
EXPOSE 8080

ENTRYPOINT ["vcenter"]
CMD ["serve"]

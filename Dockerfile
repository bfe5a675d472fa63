# syntax=docker/dockerfile:1
# Two stages: `build` installs the dependencies into /venv in a layer that changes only
# with pyproject.toml; the final image copies /venv, then the code, and runs as `app`.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /venv
WORKDIR /app
COPY pyproject.toml ./
# An empty package and README stand in for the code, so that this layer (every dependency,
# plus an editable link from /venv to /app/service) is rebuilt only when pyproject.toml
# changes. The link keeps the code where service/migrate.py expects migrations/: beside it.
RUN mkdir service \
 && touch service/__init__.py README.md \
 && /venv/bin/pip install --editable .

FROM ${PYTHON_IMAGE}
ENV PATH=/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    DATA_DIR=/var/lib/jira-status-cache
# DATA_DIR is only used by the embedded PostgreSQL, when DATABASE_URL is unset.
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent app \
 && install --directory --owner=app --group=app /var/lib/jira-status-cache
COPY --from=build /venv /venv
WORKDIR /app
COPY migrations ./migrations
COPY service ./service
# Compiled now: `app` cannot write __pycache__ under /app.
RUN python -m compileall -q service
USER app
EXPOSE 8000
# slim has no curl; a failed or refused request makes python exit non-zero.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=3)"
ENTRYPOINT ["jira-status-cache"]
CMD ["serve"]

# syntax=docker/dockerfile:1
# Two stages: `build` installs the dependencies into /venv in a layer that changes only with
# pyproject.toml, then the project itself as a wheel would install it; the final image copies
# /venv alone and runs as `app`.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /venv
WORKDIR /src
COPY pyproject.toml ./
# The dependencies, read from pyproject.toml alone, so that a code change does not reinstall them.
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
 && /venv/bin/pip install --requirement requirements.txt
# Then the project, not editable: migrations/ is installed inside it, as service.migrations.
COPY README.md ./
COPY migrations ./migrations
COPY service ./service
COPY jira_simulator ./jira_simulator
COPY cache_demo ./cache_demo
RUN /venv/bin/pip install --no-deps .

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
# The code and its migrations live in /venv, compiled by pip as it installed them.
COPY --from=build /venv /venv
WORKDIR /var/lib/jira-status-cache
USER app
EXPOSE 8000
# slim has no curl; a failed or refused request makes python exit non-zero.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=3)"
ENTRYPOINT ["jira-status-cache"]
CMD ["serve"]

# syntax=docker/dockerfile:1
# Two stages: `build` installs the locked dependencies into /venv, each checked against its
# hash, in a layer that changes only with requirements/service.lock; then the service itself
# as a wheel would install it. The final image copies /venv alone and runs as `app`.
# It ships the service alone: not the Jira simulator, the demo, nor the embedded PostgreSQL
# (DATABASE_URL is required; compose runs PostgreSQL beside it).
# The base, pinned by digest (python:3.11.13-slim-bookworm, linux/amd64 and arm64): the same
# bytes on every build. Bump the tag and its digest together.
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /venv
WORKDIR /src
COPY requirements/service.lock ./
# The runtime dependencies exactly as locked (make lock), hashes checked, before the code.
RUN /venv/bin/pip install --require-hashes --no-deps --requirement service.lock
# Then the service, not editable: migrations/ is installed inside it, as service.migrations.
COPY pyproject.toml README.md ./
COPY migrations ./migrations
COPY service ./service
# The simulator and the demo are development tools, not sent here: out of the package list.
RUN sed -i -e '/^    "jira_simulator",$/d' -e '/^    "cache_demo",$/d' pyproject.toml \
 && /venv/bin/pip install --no-deps .

FROM ${PYTHON_IMAGE}
ENV PATH=/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8000
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent app
# The code and its migrations live in /venv, compiled by pip as it installed them.
COPY --from=build /venv /venv
WORKDIR /
USER app
EXPOSE 8000
# slim has no curl; a failed or refused request makes python exit non-zero.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=3)"
ENTRYPOINT ["jira-status-cache"]
CMD ["serve"]

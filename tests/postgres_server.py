"""A PostgreSQL server of a test's own (initdb into a temporary folder), so that a test can restart it with
PostgreSQL's own tooling (pg_ctl) without disturbing the shared server the other tests use."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from serving.testing import free_port


class PrivatePostgres:
    def __init__(self):
        self.bin = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
        # Not under pytest's tmp_path: that is private to root, and the cluster's user must reach its folder.
        root = Path(tempfile.mkdtemp(prefix="flywheel-pg-"))
        self.root, self.data, self.port = root, root / "data", free_port()
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root: its own user owns the cluster
            shutil.chown(root, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*as_postgres, str(self.bin / tool), *args], check=True, capture_output=True, cwd=self.root)

    def _ctl(self, *args: str) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-o", options, "-w", *args)

    def start(self) -> None:
        self._ctl("start")

    def restart(self) -> None:
        """A fast restart: open connections are cut, the server is down for a moment, then back."""
        self._ctl("-m", "fast", "restart")

    def stop(self) -> None:
        """Stop the server and remove its cluster."""
        self._ctl("-m", "fast", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

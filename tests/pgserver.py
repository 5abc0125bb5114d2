"""A throwaway PostgreSQL cluster for tests and benchmarks: ``initdb`` into a temp folder, ``pg_ctl start`` on a free
loopback port, ``pg_ctl stop`` at the end. Debian's ``postgresql`` package provides the binaries (``scripts/setup.sh``
and ``.ci/run`` install it when missing). PostgreSQL refuses to run as root: as root, the cluster runs as the
``postgres`` user (made by the package), through ``runuser``.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def pg_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on PATH, else the newest under /usr/lib/postgresql."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(versions[-1]).parent if versions else None


def unavailable() -> str | None:
    """Why no cluster can be started here, or None."""
    if pg_bin() is None:
        return "PostgreSQL's server binaries (Debian package postgresql) are not installed"
    if os.geteuid() == 0 and (shutil.which("runuser") is None or _uid("postgres") is None):
        return "running as root without a postgres user to run the cluster as"
    return None


def _uid(name: str) -> int | None:
    import pwd

    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def cluster(base: Path | None = None, max_connections: int = 200) -> Iterator[str]:
    """Start a cluster; yields its connection string (database ``costinfer``, trust authentication on loopback)."""
    why = unavailable()
    if why:
        raise RuntimeError(why)
    bindir = pg_bin()
    assert bindir is not None
    # a short path: the server's socket lives in the data folder and a Unix socket path has at most 107 bytes
    root = Path(tempfile.mkdtemp(prefix="cipg-", dir=base))
    data = root / "data"
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    if as_root:
        os.chmod(root, 0o755)
        shutil.chown(root, "postgres", "postgres")
    port = _free_port()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-U", "costinfer", "-A", "trust", "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
        env=env,
    )
    options = (
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off "
        f"-c full_page_writes=off -c max_connections={max_connections}"
    )
    subprocess.run(
        [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(data / "log"), "-w", "start"],
        check=True,
        capture_output=True,
        env=env,
    )
    try:
        subprocess.run(
            [*prefix, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "costinfer", "costinfer"],
            check=True,
            capture_output=True,
            env=env,
        )
        yield f"postgresql://costinfer@127.0.0.1:{port}/costinfer"
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            env=env,
        )
        shutil.rmtree(root, ignore_errors=True)


def new_database(url: str, name: str) -> str:
    """A fresh database on the cluster at ``url``: each test its own store."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as con:
        con.execute(f'CREATE DATABASE "{name}"')
    return url.rsplit("/", 1)[0] + "/" + name

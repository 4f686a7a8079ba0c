"""``tunelab tracking-server``: the team's MLflow tracking server on PostgreSQL.

    make tracking-server PGDATA=/srv/tunelab/pg ARTIFACTS=/srv/tunelab/artifacts   # a cluster made on first use
    make tracking-server DATABASE_URL=postgresql+psycopg://mlflow:…@db:5432/mlflow ARTIFACTS=s3://bucket/mlflow

MLflow does the serving (``mlflow server`` with artifact proxying, so clients need no storage
credentials of their own) and PostgreSQL the storing; this module only starts them together.
Without a database URL it makes a PostgreSQL cluster in a folder with the server binaries
(``initdb``, ``pg_ctl``; as the ``postgres`` user when run as root, which PostgreSQL refuses).
MLflow reaches it through the cluster's Unix socket in that folder (trust: whoever can open the
folder owns the data anyway); over TCP it listens on 127.0.0.1 only and asks for a password
(scram-sha-256; its roles have none until you give one). Stopping the server (Ctrl-C, SIGTERM)
stops a cluster it started.
"""

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

from tunelab.errors import TunelabError
from tunelab.secrets import shown

DATABASE = "mlflow"
ROLE = "tunelab"
LOOPBACK = "127.0.0.1"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tunelab tracking-server", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    store = parser.add_mutually_exclusive_group(required=True)
    store.add_argument("--pgdata", type=Path, help="a PostgreSQL cluster folder, made on first use")
    store.add_argument("--database-url", help="an existing database, e.g. postgresql+psycopg://user:pw@host:5432/mlflow")
    parser.add_argument("--artifacts", required=True, help="where run artifacts go: a folder or an s3:// URL")
    parser.add_argument("--host", default=LOOPBACK, help="the address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--pg-port", type=int, default=None, help="the cluster's port (default: a free one)")
    return parser.parse_args(argv)


def as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL's server binaries refuse to run as root: as root, run them as the postgres user."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def require_binaries() -> None:
    missing = [name for name in ("initdb", "pg_ctl") if shutil.which(name) is None]
    if missing:
        raise TunelabError(f"PostgreSQL's server binaries {missing} are not on PATH: install them (Debian: apt-get install "
                           "postgresql) or give --database-url of an existing database")


def require_reachable_by_postgres(folder: Path) -> None:
    """As root the cluster runs as the postgres user, who must be able to walk to its folder."""
    if subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(folder.parent)]).returncode != 0:
        raise TunelabError(f"--pgdata {folder}: the postgres user (PostgreSQL refuses to run as root) cannot reach "
                           f"{folder.parent}; choose a folder it can (e.g. under /srv or /tmp), or let it in "
                           "(chmod o+x on each folder above)")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def start_cluster(folder: Path, port: int) -> str:
    """The cluster in ``folder`` (made on first use) running on ``port``; its database URL."""
    require_binaries()
    folder = folder.resolve()
    if not (folder / "PG_VERSION").is_file():
        if folder.exists() and any(folder.iterdir()):
            raise TunelabError(f"--pgdata {folder}: not empty and not a PostgreSQL cluster; name an empty or new folder")
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            require_reachable_by_postgres(folder)
            shutil.chown(folder, "postgres", "postgres")
        run(as_postgres(["initdb", "-D", str(folder), "--auth-local=trust", "--auth-host=scram-sha-256", "-U", ROLE]),
            "initdb")
    options = f"-p {port} -k {folder} -c listen_addresses={LOOPBACK}"
    run(as_postgres(["pg_ctl", "-D", str(folder), "-o", options, "-l", str(folder / "server.log"), "-w", "start"]),
        "pg_ctl start")
    create_database(folder, port)
    return f"postgresql+psycopg://{ROLE}@/{DATABASE}?host={folder}&port={port}"


def create_database(socket_folder: Path, port: int) -> None:
    import psycopg

    with psycopg.connect(host=str(socket_folder), port=port, user=ROLE, dbname="postgres", autocommit=True) as connection:
        if not connection.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
            connection.execute(f"CREATE DATABASE {DATABASE}")


def stop_cluster(folder: Path) -> None:
    subprocess.run(as_postgres(["pg_ctl", "-D", str(folder.resolve()), "-m", "fast", "-w", "stop"]),
                   capture_output=True)


def check_database(url: str) -> None:
    """One line naming the database (never its password) if it refuses us, before MLflow starts."""
    import sqlalchemy

    try:
        with sqlalchemy.create_engine(url).connect():
            pass
    except sqlalchemy.exc.SQLAlchemyError as error:
        reason = (str(error.orig or error).strip().splitlines() or ["?"])[0]
        raise TunelabError(f"the tracking database {shown(url)} refused the connection: {reason}") from None


def run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise TunelabError(f"{what} failed: {(done.stderr or done.stdout).strip().splitlines()[-1:]}")


def mlflow_command(database_url: str, artifacts: str, host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", database_url,
            "--artifacts-destination", artifacts, "--serve-artifacts", "--host", host, "--port", str(port)]


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = None
    if args.database_url:
        url = args.database_url
    else:
        url, started = start_cluster(args.pgdata, args.pg_port or free_port()), args.pgdata
    try:
        check_database(url)
        server = subprocess.Popen(mlflow_command(url, args.artifacts, args.host, args.port))
        print(f"tunelab tracking-server: MLflow at http://{args.host}:{args.port} on {shown(url)}, artifacts in "
              f"{args.artifacts}. Point tunelab at it with `dvc exp run -S tracking=server` (conf/tracking/server.yaml) "
              f"or MLFLOW_TRACKING_URI=http://{args.host}:{args.port}; Ctrl-C stops it", flush=True)
        signal.signal(signal.SIGTERM, lambda *_: server.terminate())
        try:
            return server.wait()
        except KeyboardInterrupt:
            server.terminate()
            return server.wait()
    finally:
        if started:
            stop_cluster(started)

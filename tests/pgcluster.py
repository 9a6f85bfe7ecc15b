"""A throwaway PostgreSQL cluster for the test suite (standard library only).

    with PostgresCluster() as pg:
        connect(host=pg.host, port=pg.port, user=pg.user, dbname="postgres")
        pg.restart(mode="immediate")   # chaos tests: the server goes away
        # in another process (a test): PostgresCluster.attach(datadir, port)

The cluster lives in a temporary directory, listens on a free port of
127.0.0.1 only, trusts every local connection, and is tuned for speed rather
than durability. It is stopped and deleted on exit, on exceptions, on Ctrl-C,
and (through atexit) when the interpreter ends without leaving the block.
"""

import atexit
import glob
import logging
import os
import pwd
import re
import shlex
import shutil
import socket
import subprocess
import tempfile

logger = logging.getLogger(__name__)

# initdb and postgres refuse to run as root; these accounts are tried in order.
# "postgres" is created by distribution packages, "nobody" exists everywhere.
UNPRIVILEGED_USERS = ("postgres", "nobody")


def find_pg_bindir():
    """Return the directory holding initdb and pg_ctl, or None if not installed.

    Debian and Ubuntu keep the server binaries off PATH, under
    /usr/lib/postgresql/VERSION/bin, hence the fallbacks.
    """
    initdb = shutil.which("initdb")
    if initdb:
        # Resolve symlinks so the bindir is the real installation, where the
        # postgres binary sits next to initdb.
        candidates = [os.path.dirname(os.path.realpath(initdb))]
    else:
        candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        result = subprocess.run(
            [pg_config, "--bindir"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0:
            candidates.append(result.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    for bindir in candidates:
        if all(os.access(os.path.join(bindir, tool), os.X_OK) for tool in ("initdb", "pg_ctl")):
            return bindir
    return None


def _version_key(path):
    """Sort key making /usr/lib/postgresql/16 newer than /usr/lib/postgresql/9.6."""
    return [int(part) for part in re.findall(r"\d+", path)]


def _free_port():
    # The port is released before postgres binds it; another process could
    # take it in between, but on a test machine that race is negligible.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _unprivileged_account():
    """The pwd entry to run the server as, or None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError(f"running as root, and none of the users {UNPRIVILEGED_USERS} exists")


class PostgresCluster:
    """A PostgreSQL server of its own, in a temporary directory."""

    host = "127.0.0.1"
    user = "postgres"

    def __init__(self, bindir=None):
        self.bindir = bindir or find_pg_bindir()
        if self.bindir is None:
            raise RuntimeError("PostgreSQL is not installed (no initdb/pg_ctl found)")
        self.port = None
        self.datadir = None
        self._root = None
        self._account = _unprivileged_account()

    @classmethod
    def attach(cls, datadir, port, bindir=None):
        """The running cluster of another process, to stop, start or restart it.

        tests/run.py makes the cluster and passes its datadir to the tests,
        which restart it under the workers' feet. Its maker deletes it: do
        not close() an attached cluster.
        """
        cluster = cls(bindir)
        cluster._root = os.path.dirname(datadir)
        cluster.datadir = datadir
        cluster.port = port
        return cluster

    def __enter__(self):
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info):
        self.close()

    def start(self):
        """Start the server, creating the cluster on first use."""
        if self._root is None:
            self._create()
        self._pg_ctl(
            "start",
            "--wait",
            "--log=" + os.path.join(self._root, "postgres.log"),
            "--options=" + shlex.join(self._server_options()),
        )
        logger.info("PostgreSQL listening on %s:%s (%s)", self.host, self.port, self.datadir)

    def stop(self, mode="fast"):
        """Stop the server and keep its data; mode is pg_ctl's smart/fast/immediate."""
        self._pg_ctl("stop", "--wait", "--mode=" + mode)

    def restart(self, mode="fast"):
        """Stop the server with pg_ctl's mode, then start it again on the same port."""
        self.stop(mode)
        self.start()

    def close(self):
        """Stop the server at once if it runs, and delete the cluster. Idempotent."""
        atexit.unregister(self.close)
        if self._root is None:
            return
        if os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
            try:
                self.stop(mode="immediate")
            except RuntimeError as error:
                logger.warning("%s", error)
        shutil.rmtree(self._root, ignore_errors=True)
        self._root = self.datadir = None

    def log_tail(self, lines=20):
        """The end of the server log, for error messages."""
        if self._root is None:
            return ""
        try:
            with open(os.path.join(self._root, "postgres.log"), errors="replace") as log:
                return "".join(log.readlines()[-lines:])
        except OSError:
            return ""

    def _create(self):
        self._root = tempfile.mkdtemp(prefix="toosimpleq-pg-")
        # Registered before anything can fail, so a half-made cluster is
        # cleaned up too.
        atexit.register(self.close)
        if self._account is not None:
            os.chown(self._root, self._account.pw_uid, self._account.pw_gid)
        self.datadir = os.path.join(self._root, "data")
        self.port = _free_port()
        self._run(
            os.path.join(self.bindir, "initdb"),
            "--pgdata=" + self.datadir,
            "--username=" + self.user,
            "--auth=trust",
            # Speed: the cluster is thrown away, so skip fsync during initdb.
            "--no-sync",
            # Fixed so the machine's locale settings cannot make initdb fail
            # or change sorting between machines.
            "--encoding=UTF8",
            "--locale=C",
        )

    def _server_options(self):
        return [
            f"--port={self.port}",
            f"--listen_addresses={self.host}",
            # The Unix socket goes in our directory: the default
            # /var/run/postgresql may not exist or be writable.
            f"--unix_socket_directories={self._root}",
            # Durability is pointless for a throwaway cluster; speed is not.
            "--fsync=off",
            "--synchronous_commit=off",
            "--full_page_writes=off",
            # Tests run many worker processes with many threads, each
            # holding its own connection.
            "--max_connections=300",
        ]

    def _pg_ctl(self, *args):
        self._run(os.path.join(self.bindir, "pg_ctl"), "--pgdata=" + self.datadir, *args)

    def _run(self, *command):
        kwargs = {}
        if self._account is not None:
            kwargs = {
                "user": self._account.pw_uid,
                "group": self._account.pw_gid,
                "extra_groups": [],
            }
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            # Our working directory may not be readable by the server's user.
            cwd=self._root,
            # The server gets its own session, so a Ctrl-C meant for the test
            # run does not kill the database under the tests' feet: we stop
            # it ourselves, in order.
            start_new_session=True,
            check=False,
            **kwargs,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{shlex.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}{self.log_tail()}"
            )

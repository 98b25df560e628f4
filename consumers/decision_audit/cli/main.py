"""The ``decision-audit`` command line."""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from decision_audit.cli.errors import AuditGroup, ErrorLine
from decision_audit.cli.options import build_settings, settings_options
from decision_audit.cli.paths import OutputDir, OutputFile
from decision_audit.cli.store import open_store
from decision_audit.clickhouse.connect import chdb_path, connect
from decision_audit.clickhouse.settings import ClickHouseSettings, MigrateSettings
from decision_audit.contract.errors import DecisionAuditError
from decision_audit.contract.settings import ENV_PREFIX
from decision_audit.devtools.tansu_broker import LocalBroker
from decision_audit.worker.keystore import KeyFilerSettings
from decision_audit.worker.settings import WorkerSettings

ENV = ENV_PREFIX

KEYS_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
WORKER_SWITCHES = {
    "require_signed": ("--require-signed", "--allow-unsigned"),
    "parse_in_clickhouse": ("--parse-in-clickhouse", "--parse-in-python"),
}
"""the worker's boolean flags not spelt ``--name/--no-name``"""

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
"""finish the batch, commit and exit 0"""
QUIET_LOGGERS = ("clickhouse_connect", "urllib3")
"""they warn of a failed connect (and its retry) that the one-line error reports anyway"""

store_options = settings_options(ClickHouseSettings)
"""``--clickhouse-url`` and ``--database``, from :class:`ClickHouseSettings`"""


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if verbose:
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
    else:
        logging.getLogger("decision_audit.kafka").setLevel(logging.WARNING)


def _parse_ts(value: str | None, flag: str) -> datetime | None:
    if value is None:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        raise click.UsageError(
            f"{flag} {value!r} is not an ISO time: use e.g. 2024-05-01 or 2024-05-01T12:00:00Z"
        ) from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _keyring(keys: Path | None) -> Any:
    from decision_audit.contract.keys import KeyRing

    try:
        return KeyRing.load(keys)
    except ValueError as exc:
        raise click.BadParameter(str(exc).removeprefix("--keys "), param_hint="--keys") from None


actor_option = click.option(
    "--actor",
    help=f"who is reading, for the access log. [env: {ENV}ACTOR; default: the OS user]",
)

KEYSTORE_KEY = click.Path(dir_okay=False, path_type=Path)


def _keystore_key(path: Path | None) -> Any:
    """The key store's private key of --keystore-key (None without the flag)."""
    if path is None:
        return None
    from decision_audit.audit.keystore import KeystoreKey
    from decision_audit.contract.sealing import SealingError

    try:
        return KeystoreKey(path)
    except SealingError as exc:
        raise click.BadParameter(str(exc), param_hint="--keystore-key") from None


@click.group(
    cls=AuditGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(package_name="decision-audit")
def main() -> None:
    """decision-audit: a tamper-evident audit trail for ML decisions (Kafka → ClickHouse).

    An option whose help shows [env: DECISION_AUDIT_<OPTION>] can also be set with that
    environment variable; a flag wins over it.
    """
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


@main.command()
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=9092,
    show_default=True,
    help="loopback port to listen on",
)
@click.option("--host", default="127.0.0.1", show_default=True)
def broker(port: int, host: str) -> None:
    """Run the local Tansu broker (in-memory storage) in the foreground until Ctrl-C."""
    b = LocalBroker(port=port, host=host).start()
    click.echo(f"broker listening on {b.bootstrap_servers} (memory storage; Ctrl-C to stop)")
    try:
        while b.running:
            time.sleep(0.5)
        raise ErrorLine(f"broker exited: {b.failure()}")
    except KeyboardInterrupt:
        pass
    finally:
        b.close()


@main.command()
@settings_options(MigrateSettings)
@click.option(
    "--print",
    "print_only",
    is_flag=True,
    help="print the DDL (every statement, as run on an empty database) instead of running "
    "it; connects to nothing",
)
@click.option(
    "--print-grants",
    is_flag=True,
    help="print the roles, grants and users a deployment needs (SQL; passwords hashed from "
    "$CLICKHOUSE_PASSWORD, $CLICKHOUSE_KEYS_PASSWORD, $CLICKHOUSE_AUDITOR_PASSWORD, "
    "$CLICKHOUSE_ADMIN_PASSWORD, placeholders when unset); connects to nothing",
)
def migrate(print_only: bool, print_grants: bool, **flags: Any) -> None:
    """Create or upgrade the audit tables (idempotent: safe to run on every deploy).

    With --cluster, the same migrations as ON CLUSTER DDL: Replicated tables (NAME_local) on
    every shard, Distributed tables under the names the worker and the tools query.
    Run it as the admin user; --print-grants shows what each user may do.
    """
    from decision_audit.clickhouse.migrate import ClusterNeedsServer, migration_script
    from decision_audit.clickhouse.migrate import migrate as apply

    s = build_settings(MigrateSettings, flags)
    if print_grants:
        from decision_audit.clickhouse.grants import grants_script

        click.echo(grants_script(s.database, s.cluster), nl=False)
        return
    if print_only:
        click.echo(migration_script(s.database, s.cluster), nl=False)
        return
    where = f"database {s.database}" + (f" on cluster {s.cluster}" if s.cluster else "")
    if s.cluster is not None and chdb_path(s.clickhouse_url) is not None:
        raise ClusterNeedsServer(
            f"--cluster {s.cluster} needs a ClickHouse server of that cluster: "
            f"{s.clickhouse_url} is the embedded engine, which has no clusters; use "
            "--clickhouse-url http://user:pass@host:8123, or --print to see the DDL"
        )
    applied = apply(connect(s.clickhouse_url), s.database, s.cluster)
    for mig in applied:
        click.echo(f"applied {mig.label}")
    click.echo(f"{where} is up to date ({len(applied)} migration(s) applied)")


@main.command()
@settings_options(WorkerSettings, switches=WORKER_SWITCHES, param_types={"keys": KEYS_DIR})
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def worker(verbose: bool, **flags: Any) -> None:
    """Consume decision events, verify, de-duplicate and batch-insert them into ClickHouse.

    Offsets are committed only after a batch is stored. SIGINT/SIGTERM finish the batch,
    commit and exit 0. Started before its broker is up, the worker waits for it
    (--broker-wait). Transient ClickHouse errors are retried with backoff (partitions
    paused); past the retry limit, or on a permanent error, the worker exits 1 and names the
    cause, with nothing committed past the last stored batch.
    """
    from decision_audit.worker.loop import Worker
    from decision_audit.worker.startup import listen_problem

    _setup_logging(verbose)
    settings = build_settings(WorkerSettings, flags)
    if settings.metrics_port is not None:
        problem = listen_problem(
            settings.metrics_host, settings.metrics_port, "--metrics-port", "--metrics-host"
        )
        if problem is not None:
            raise ErrorLine(f"metrics endpoint: {problem}")
    w = Worker(settings)
    previous = {sig: signal.signal(sig, lambda *_: w.stop()) for sig in STOP_SIGNALS}
    try:
        stats = w.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(
        f"stored {stats.inserted} events, dropped {stats.duplicates} duplicates, "
        f"quarantined {stats.quarantined_total}",
        err=True,
    )


@main.command()
@click.option(
    "--out",
    type=OutputDir(mode=0o700),
    required=True,
    help="directory to write KEY_ID.key (private, mode 0600) and KEY_ID.pub into; created "
    "(mode 0700) if missing",
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
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--key-id") from None
    except FileExistsError as exc:
        raise ErrorLine(str(exc)) from None
    click.echo(f"key id:      {kid}\nprivate key: {private}\npublic key:  {public}")


@main.command()
@store_options
@click.option(
    "--keys",
    type=KEYS_DIR,
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
@click.option(
    "--witness-from-kafka",
    is_flag=True,
    help="read the witness statements from the witness topic instead of ClickHouse (and "
    "report any the topic has that ClickHouse lacks or holds otherwise)",
)
@click.option(
    "--bootstrap-servers",
    envvar=f"{ENV}BOOTSTRAP_SERVERS",
    default="localhost:9092",
    show_default=True,
    help="Kafka bootstrap servers, for --witness-from-kafka",
)
@click.option(
    "--witness-topic",
    envvar=f"{ENV}WITNESS_TOPIC",
    default="decision-witness",
    show_default=True,
    help="topic of the witness statements, for --witness-from-kafka",
)
@click.option(
    "--expect-witness",
    is_flag=True,
    envvar=f"{ENV}EXPECT_WITNESS",
    help="the workers keep a witness: an empty witness log, or a chain stored more than "
    "--witness-grace ago that no statement covers, is a problem",
)
@click.option(
    "--witness-grace",
    type=click.FloatRange(min=0),
    default=600.0,
    show_default=True,
    help="seconds a chain may be stored before --expect-witness requires a statement of it",
)
def verify(
    keys: Path | None,
    producer: str | None,
    since: str | None,
    until: str | None,
    incremental: bool,
    fmt: str,
    witness_from_kafka: bool,
    bootstrap_servers: str,
    witness_topic: str,
    expect_witness: bool,
    witness_grace: float,
    **flags: Any,
) -> None:
    """Prove the stored trail is complete and untouched.

    Recomputes every event hash from the stored original bytes, walks each producer's
    chain in seq order, and checks every checkpoint signature. Then checks the workers'
    witness logs: each links and is signed (with --keys), and every chain a witness recorded
    still exists up to the witnessed seq and head (with --expect-witness, that there is a
    witness log and it covers every stored chain). Exits 0 only when all checks pass; 1 with
    a report of each altered, deleted, inserted or reordered row, each forged or missing
    checkpoint and each deleted or truncated chain otherwise.
    """
    from rich.progress import Progress

    from decision_audit.audit.verify import TrailVerifier
    from decision_audit.audit.verify_report import print_report

    s = build_settings(ClickHouseSettings, flags)
    keyring = _keyring(keys)
    window = (_parse_ts(since, "--since"), _parse_ts(until, "--until"))
    client = open_store(s)
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
    witness = _check_witness(
        client,
        s.database,
        keyring,
        bootstrap_servers if witness_from_kafka else None,
        witness_topic,
        expect_witness,
        witness_grace,
    )
    if fmt == "json":
        import json

        out = {**report.to_dict(), "witness": witness.to_dict()}
        out["ok"] = report.ok and witness.ok
        print(json.dumps(out, indent=2, default=str))
    else:
        from decision_audit.audit.witness import print_witness

        print_report(report, fmt, Console())
        print_witness(witness, Console())
    sys.exit(0 if report.ok and witness.ok else 1)


def _check_witness(
    client: Any,
    database: str,
    keyring: Any,
    bootstrap_servers: str | None,
    topic: str,
    expect: bool,
    grace: float,
) -> Any:
    """The witness logs' check (verify's second part), from ClickHouse or the topic."""
    from datetime import timedelta

    from decision_audit.audit.witness import (
        WitnessChecker,
        WitnessSourceError,
        statements_from_clickhouse,
        statements_from_kafka,
    )

    checker = WitnessChecker(
        client, database, keyring, expect=expect, grace=timedelta(seconds=grace)
    )
    stored = statements_from_clickhouse(client, database)
    if bootstrap_servers is None:
        return checker.run(stored)
    try:
        published = statements_from_kafka(bootstrap_servers, topic)
    except WitnessSourceError as exc:
        raise ErrorLine(f"--witness-from-kafka: {exc}") from None
    return checker.run(published, f"topic {topic}", compare_with=stored)


@main.command()
@store_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@actor_option
@click.argument("sql")
def query(fmt: str, actor: str | None, sql: str, **flags: Any) -> None:
    """Run SQL against the audit store and print the result.

    The read is recorded (who, what, when) in the access_log table.
    Example: decision-audit query "SELECT model_name, count() FROM audit.decisions GROUP BY 1"
    """
    from decision_audit.audit.access_log import record_access
    from decision_audit.audit.output import render

    s = build_settings(ClickHouseSettings, flags)
    client = open_store(s, require_migrated=False)  # any SQL may run; the log is best effort
    try:
        result = client.query(sql)
    except Exception as exc:
        record_access(client, s.database, "query", sql, actor=actor, status="error")
        raise ErrorLine(f"query failed: {exc}") from None
    record_access(client, s.database, "query", sql, actor=actor)
    render(result.column_names, result.result_rows, fmt, Console())


@main.command()
@store_options
@click.option(
    "--keys",
    type=KEYS_DIR,
    help="directory of trusted KEY_ID.pub keys to check the covering checkpoint's signature",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option(
    "--keystore-key",
    type=KEYSTORE_KEY,
    help="the key store's private KEY_ID.key: show the decision's encrypted inputs opened",
)
@click.option(
    "--deployment",
    metavar="DEPLOYMENT_ID",
    help="instead of ID: the deployment's timeline (its events and its model versions'), "
    "with the decision volume and score/prediction shift around each event",
)
@click.option(
    "--model-version",
    "model_version",
    metavar="NAME@VERSION",
    help="instead of ID: the model version's approval chain, each event's integrity and what "
    f"the promotion policy rejects [policy: env {ENV}PROMOTION_POLICY_FILE]",
)
@click.option(
    "--since", help="with --deployment: events at or after this ISO time (UTC if no zone)"
)
@click.option("--until", help="with --deployment: events before this ISO time")
@actor_option
@click.argument("ident", metavar="ID", required=False)
def trace(
    keys: Path | None,
    fmt: str,
    keystore_key: Path | None,
    deployment: str | None,
    model_version: str | None,
    since: str | None,
    until: str | None,
    actor: str | None,
    ident: str | None,
    **flags: Any,
) -> None:
    """Trace one decision (by event id, request id or prediction id) through its lineage,
    a deployment's timeline (--deployment) or a model version's approval chain
    (--model-version).

    For a decision: the decision, its reviews and outcomes, the deployment that served it,
    the model version (who registered, approved and promoted it), the training run,
    dataset, code commit and environment, and the integrity of its record (hash, chain
    link, covering signed checkpoint). Exit 1 when nothing matches or an integrity check
    fails; missing lineage links and what the promotion policy rejects are reported.
    """
    from decision_audit.audit.access_log import record_access
    from decision_audit.audit.trace import (
        LifecycleTracer,
        TraceNotFound,
        Tracer,
        print_approvals,
        print_timeline,
        print_trace,
    )
    from decision_audit.contract.promotion import PromotionPolicy

    modes = [m for m in (ident, deployment, model_version) if m is not None]
    if len(modes) != 1:
        raise click.UsageError("give exactly one of ID, --deployment or --model-version")
    if (since or until) and deployment is None:
        raise click.UsageError("--since and --until go with --deployment")
    if model_version is not None and "@" not in model_version.strip("@"):
        raise click.BadParameter("expected NAME@VERSION", param_hint="--model-version")
    window = (_parse_ts(since, "--since"), _parse_ts(until, "--until"))
    s = build_settings(ClickHouseSettings, flags)
    keyring = _keyring(keys)
    opener = _keystore_key(keystore_key)
    try:
        policy = PromotionPolicy.load()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    client = open_store(s)
    target = ident or (f"deployment {deployment}" if deployment else f"model_version {modes[0]}")
    if deployment is not None:
        target += f" {since or ''}..{until or ''}"
    lifecycle = LifecycleTracer(client, s.database, keyring, policy=policy)
    try:
        if deployment is not None:
            timeline = lifecycle.deployment(deployment, *window)
        elif model_version is not None:
            chain = lifecycle.model_version(model_version)
        else:
            result = Tracer(client, s.database, keyring, keystore_key=opener).trace(modes[0])
    except TraceNotFound:
        record_access(client, s.database, "trace", target, actor=actor, status="not_found")
        raise
    record_access(client, s.database, "trace", target, actor=actor)
    if deployment is not None:
        print_timeline(timeline, fmt, Console())
        sys.exit(0 if timeline.ok else 1)
    if model_version is not None:
        print_approvals(chain, fmt, Console())
        sys.exit(0 if chain.ok else 1)
    print_trace(result, fmt, Console())
    sys.exit(0 if result.integrity.ok else 1)


@main.command()
@store_options
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@actor_option
def reconcile(fmt: str, actor: str | None, **flags: Any) -> None:
    """Re-hash the artifacts lifecycle events name and record what no longer matches.

    Every register, train, data_snapshot and attest event whose metadata names an
    artifact_uri and its artifact_sha256: the file (a local path or file:// URL; other
    URLs through fsspec when it is installed) is hashed again. A mismatch or a missing
    artifact is written to the incidents table (artifact_mismatch, artifact_missing), so
    the account needs INSERT on it. Exit 1 if any artifact failed or the incidents could not
    be recorded; artifacts that cannot be checked here are reported.
    """
    from decision_audit.audit.access_log import record_access
    from decision_audit.audit.reconcile import print_reconciliation
    from decision_audit.audit.reconcile import reconcile as run_reconcile

    s = build_settings(ClickHouseSettings, flags)
    client = open_store(s)
    result = run_reconcile(client, s.database)
    status = "ok" if result.ok else "failed"
    detail = json.dumps(result.summary())
    record_access(
        client, s.database, "reconcile", "artifacts", actor=actor, status=status, detail=detail
    )
    print_reconciliation(result, fmt, Console())
    sys.exit(0 if result.ok else 1)


@main.command()
@store_options
@click.option(
    "--model-version",
    "model_version",
    required=True,
    metavar="NAME@VERSION",
    help="the model version to promote",
)
@click.option("--to", "stage", default="production", show_default=True, help="the target stage")
@click.option(
    "--promoter",
    help="who will promote (an approval by them does not count, unless the policy allows it)",
)
@click.option(
    "--policy",
    "policy_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=f"TOML file of the promotion policy [env: {ENV}PROMOTION_POLICY_FILE]; "
    f"{ENV}PROMOTION_* variables override its settings",
)
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@actor_option
def gate(
    model_version: str,
    stage: str,
    promoter: str | None,
    policy_file: Path | None,
    fmt: str,
    actor: str | None,
    **flags: Any,
) -> None:
    """May MODEL_VERSION be promoted to --to now? Exit 0 if so, 1 printing what is missing.

    Asks what the worker asks of a promote event (the approvals from distinct actors, the
    separation of duties and the attestation predicates the promotion policy names) of
    what audit.model_events holds, so a CI/CD pipeline can call it before promoting.
    """
    from decision_audit.audit.access_log import record_access
    from decision_audit.audit.gate import check_gate, print_gate
    from decision_audit.contract.promotion import PromotionPolicy

    if "@" not in model_version.strip("@"):
        raise click.BadParameter("expected NAME@VERSION", param_hint="--model-version")
    try:
        policy = PromotionPolicy.load(policy_file)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--policy") from None
    s = build_settings(ClickHouseSettings, flags)
    client = open_store(s)
    answer = check_gate(client, s.database, model_version, stage, policy=policy, promoter=promoter)
    status = "ok" if answer.ok else "blocked"
    record_access(
        client, s.database, "gate", f"{model_version} -> {stage}", actor=actor, status=status
    )
    print_gate(answer, fmt, Console())
    sys.exit(0 if answer.ok else 1)


@main.command()
@store_options
@click.option(
    "--model",
    "spec",
    required=True,
    metavar="MODULE:CALLABLE",
    help="the callable that re-scores a decision's stored inputs (see above)",
)
@click.option(
    "--model-version",
    "model_version",
    metavar="NAME@VERSION",
    help="instead of ID: replay this model version's decisions",
)
@click.option("--since", help="with --model-version: decisions at or after this ISO time")
@click.option("--until", help="with --model-version: decisions before this ISO time")
@click.option(
    "--limit",
    type=click.IntRange(1, 1_000_000),
    default=100,
    show_default=True,
    help="at most this many decisions: the first from --since, else the latest",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(0, None),
    default=1e-6,
    show_default=True,
    help="largest absolute difference of a score (or a numeric prediction) that agrees",
)
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True
)
@actor_option
@click.argument("ident", metavar="ID", required=False)
def replay(
    spec: str,
    model_version: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    tolerance: float,
    fmt: str,
    actor: str | None,
    ident: str | None,
    **flags: Any,
) -> None:
    """Re-score stored decisions with a model and compare with what was stored: one decision
    (ID: event id, request id or prediction id) or a model version's (--model-version, with
    --since, --until, --limit).

    \b
    The model: --model module:callable (module imported with the current directory on
    sys.path; callable may be a dotted path, e.g. scoring:model.predict). One callable,
    called once per decision with one argument: the decision's stored inputs, the dict
    log_decision was given. It returns the prediction alone (only predictions are then
    compared), a (prediction, score) tuple, or a dict with "prediction" and optionally
    "score" (return a dict prediction that way). NumPy values count as the Python values
    they hold. To replay a model object, point at a function that loads it once and calls it.

    \b
    Labels must be equal; numbers (a numeric prediction, the score) agree within
    --tolerance; a score is compared when both sides have one. Failed inferences and
    fallbacks (status not ok) and inputs redacted at the source (a redaction policy was
    applied) are reported as not replayable, not as differences.

    The run is recorded in the replays table (who, when, the callable, the selection and
    per decision stored vs replayed), so the account needs INSERT on it, and in the access
    log. Exit 0 when every replayable decision agrees, 1 when any differs or none could be
    replayed, 2 for a usage error or a callable that cannot be imported, raises or answers
    out of contract.
    """
    from decision_audit.audit.access_log import record_access
    from decision_audit.audit.replay import (
        ReplayError,
        load_model,
        print_replay,
        record_replay,
        select_decisions,
    )
    from decision_audit.audit.replay import replay as run_replay

    if (ident is None) == (model_version is None):
        raise click.UsageError("give exactly one of ID or --model-version")
    if (since or until) and model_version is None:
        raise click.UsageError("--since and --until go with --model-version")
    if model_version is not None and "@" not in model_version.strip("@"):
        raise click.BadParameter("expected NAME@VERSION", param_hint="--model-version")
    window = (_parse_ts(since, "--since"), _parse_ts(until, "--until"))
    model = load_model(spec)
    s = build_settings(ClickHouseSettings, flags)
    client = open_store(s)
    selection = ident or " ".join(
        f"{k} {v}"
        for k, v in (("model_version", model_version), ("since", since), ("until", until))
        if v is not None
    )
    selection += f" limit {limit}" if ident is None else ""
    rows = select_decisions(
        client,
        s.database,
        ident=ident,
        model_version=model_version,
        since=window[0],
        until=window[1],
        limit=limit,
    )
    if not rows:
        record_access(client, s.database, "replay", selection, actor=actor, status="not_found")
        raise ErrorLine(f"no decision matches {selection} in {s.database}.decisions")
    try:
        result = run_replay(rows, model, spec=spec, selection=selection, tolerance=tolerance)
    except ReplayError as exc:
        record_access(
            client, s.database, "replay", selection, actor=actor, status="error", detail=str(exc)
        )
        raise
    record_replay(client, s.database, result, actor=actor)
    detail = json.dumps({"replay_id": result.replay_id, "model": spec, **result.summary()})
    status = "ok" if result.ok else ("differ" if result.summary()["differed"] else "none_replayed")
    record_access(
        client, s.database, "replay", selection, actor=actor, status=status, detail=detail
    )
    print_replay(result, fmt, Console(), s.database)
    sys.exit(0 if result.ok else 1)


@main.command()
@store_options
@click.option(
    "--html",
    "out",
    type=OutputFile(),
    required=True,
    help="write the self-contained HTML report here (its folder must exist)",
)
@click.option("--model", help="only this model_name")
@click.option(
    "--since",
    help="start of the reporting window, ISO time (UTC if no zone) [default: 24 hours ago]; "
    "the shift alert compares it with the window of the same length before",
)
@click.option(
    "--keys",
    type=KEYS_DIR,
    help="directory of trusted KEY_ID.pub keys for the integrity summary",
)
@actor_option
def report(
    out: Path,
    model: str | None,
    since: str | None,
    keys: Path | None,
    actor: str | None,
    **flags: Any,
) -> None:
    """Write one self-contained HTML report: volume, prediction mix, score and latency
    quantiles, incidents, quarantine, shift alerts (PSI) and the integrity summary."""
    from decision_audit.audit.access_log import record_access
    from decision_audit.audit.report import build_report, render_html

    s = build_settings(ClickHouseSettings, flags)
    keyring = _keyring(keys)
    start = _parse_ts(since, "--since")
    client = open_store(s)
    try:
        data = build_report(client, s.database, model=model, since=start, keyring=keyring)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        out.write_text(render_html(data), encoding="utf-8")
    except OSError as exc:
        raise ErrorLine(f"cannot write {out}: {exc.strerror}; choose another --html path") from None
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
    type=OutputDir(),
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
    run_demo(events=events, producers=producers, data_dir=data_dir, console=Console())


# -- crypto-shredding: the key store and erasure ---------------------------------------------


@main.group()
def keystore() -> None:
    """The key store of encrypted input fields: its key pair and the key filer.

    Producers seal each event's data key to the key store's public key; the filer files the
    sealed keys in ClickHouse (subject_keys); holders of the private key read the fields
    (trace --keystore-key, decrypt) until `erase` destroys a subject's keys.
    """


@keystore.command("keygen")
@click.option(
    "--out",
    type=OutputDir(mode=0o700),
    required=True,
    help="directory to write KEY_ID.key (private, mode 0600) and KEY_ID.pub into",
)
@click.option("--key-id", default=None, help="key id [default: keystore-<random>]")
def keystore_keygen(out: Path, key_id: str | None) -> None:
    """Create the key store's X25519 key pair.

    Give the .pub file to producers (keystore_public_key=, DECISION_AUDIT_KEYSTORE_PUBLIC_KEY);
    keep the .key file with the auditors who may read encrypted fields and erase subjects.
    Losing it makes every encrypted field unreadable.
    """
    import secrets

    from decision_audit.contract.sealing import SealingError, generate_keystore_keypair

    kid = key_id or f"keystore-{secrets.token_hex(4)}"
    try:
        private, public = generate_keystore_keypair(out, kid)
    except SealingError as exc:
        raise click.BadParameter(str(exc), param_hint="--key-id") from None
    except FileExistsError as exc:
        raise ErrorLine(str(exc)) from None
    click.echo(f"key id:      {kid}\nprivate key: {private}\npublic key:  {public}")


@keystore.command("file")
@settings_options(KeyFilerSettings)
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def keystore_file(verbose: bool, **flags: Any) -> None:
    """File the sealed data keys of the keys topic in the key store table (subject_keys).

    Opens nothing (it has no private key). Keys of subjects erased after their decision are
    refused. SIGINT/SIGTERM finish the batch, commit and exit 0.
    """
    from decision_audit.worker.keystore import KeyFiler

    _setup_logging(verbose)
    filer = KeyFiler(build_settings(KeyFilerSettings, flags))
    previous = {sig: signal.signal(sig, lambda *_: filer.stop()) for sig in STOP_SIGNALS}
    try:
        stats = filer.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    click.echo(
        f"filed {stats.filed} keys, refused {stats.refused} of erased subjects, "
        f"{stats.malformed} malformed",
        err=True,
    )


@main.command()
@settings_options(MigrateSettings)
@click.option("--subject", help="the data subject's id, as the producers saw it")
@click.option(
    "--subject-hash",
    help="the subject's keyed hash instead (as in audit.erasures; needs no secret), e.g. to "
    "erase again after restoring a backup",
)
@click.option("--reason", required=True, help="why (e.g. the erasure request's reference)")
@click.option(
    "--actor", help=f"who erases, for the record. [env: {ENV}ACTOR; default: the OS user]"
)
@click.option(
    "--keystore-key",
    type=KEYSTORE_KEY,
    required=True,
    help="the key store's private KEY_ID.key: nothing is erased unless it opens every key",
)
def erase(
    subject: str | None,
    subject_hash: str | None,
    reason: str,
    actor: str | None,
    keystore_key: Path,
    **flags: Any,
) -> None:
    """Erase a data subject: destroy the keys of its encrypted input fields.

    The decisions stay (verify still passes: the hash covers the ciphertext); their
    encrypted fields become unreadable by anyone, every other field still queries. The
    erasure is recorded in the erasures table (who, when, why, the subject's keyed hash, how
    many decisions). The subject's keyed hash needs the producers' redaction secret in
    DECISION_AUDIT_REDACTION_SECRET. Erasing an erased subject again does nothing. On
    tables created with migrate --cluster, pass the same --cluster: the keys are deleted on
    every shard.
    """
    from decision_audit.audit.access_log import AccessSettings
    from decision_audit.audit.erasure import SubjectSecret, erase_subject
    from decision_audit.clickhouse.migrate import ClusterNeedsServer
    from decision_audit.contract.sealing import SUBJECT_HASH_RE
    from decision_audit.contract.sealing import subject_hash as keyed_hash

    s = build_settings(MigrateSettings, flags)
    if s.cluster is not None and chdb_path(s.clickhouse_url) is not None:
        raise ClusterNeedsServer(
            f"--cluster {s.cluster} needs a ClickHouse server of that cluster: "
            f"{s.clickhouse_url} is the embedded engine, which has no clusters"
        )
    if (subject is None) == (subject_hash is None):
        raise click.UsageError("name the subject with either --subject or --subject-hash")
    key = _keystore_key(keystore_key)
    if subject_hash is not None:
        if not SUBJECT_HASH_RE.match(subject_hash):
            raise click.BadParameter("64 lowercase hex digits", param_hint="--subject-hash")
        sub = subject_hash
    else:
        secret = SubjectSecret().redaction_secret
        if secret is None or not secret.get_secret_value():
            raise click.UsageError(
                f"set {ENV}REDACTION_SECRET to the producers' redaction secret: a subject's "
                "keys are filed under the keyed hash of its id (or pass --subject-hash)"
            )
        assert subject is not None
        sub = keyed_hash(secret.get_secret_value().encode(), subject)
    who = actor or AccessSettings().actor
    client = open_store(s)
    outcome = erase_subject(
        client, s.database, sub, key, actor=who, reason=reason, cluster=s.cluster
    )
    e = outcome.erasure
    if outcome.already:
        click.echo(
            f"subject {sub[:12]}… was already {e.describe()}, {e.records} decision(s); "
            "nothing to do"
        )
        return
    click.echo(
        f"erased subject {sub[:12]}…: destroyed the keys of {e.records} decision(s); "
        f"erasure {e.erasure_id} recorded in {s.database}.erasures by {e.actor}. "
        "Copies of recent keys in the keys topic expire with its retention."
    )


@main.command()
@store_options
@click.option(
    "--keystore-key",
    type=KEYSTORE_KEY,
    required=True,
    help="the key store's private KEY_ID.key",
)
@actor_option
@click.argument("event_id")
def decrypt(keystore_key: Path, actor: str | None, event_id: str, **flags: Any) -> None:
    """Print one decision's inputs with its encrypted fields opened (JSON).

    Needs the key store's private key; the read is recorded in the access log. Exit 1 when
    the subject was erased or the key is not on file.
    """
    import json

    from decision_audit.audit.access_log import record_access
    from decision_audit.audit.keystore import decrypt_inputs

    s = build_settings(ClickHouseSettings, flags)
    key = _keystore_key(keystore_key)
    client = open_store(s)
    try:
        inputs, _ = decrypt_inputs(client, s.database, event_id, key)
    except DecisionAuditError:
        record_access(client, s.database, "decrypt", event_id, actor=actor, status="refused")
        raise
    record_access(client, s.database, "decrypt", event_id, actor=actor)
    click.echo(json.dumps(inputs, indent=2, ensure_ascii=False))


def _retention_settings() -> Any:
    from decision_audit.audit.retention import RetentionSettings

    return RetentionSettings


def _no_cluster_on_chdb(s: MigrateSettings) -> None:
    from decision_audit.clickhouse.migrate import ClusterNeedsServer

    if s.cluster is not None and chdb_path(s.clickhouse_url) is not None:
        raise ClusterNeedsServer(
            f"--cluster {s.cluster} needs a ClickHouse server of that cluster: "
            f"{s.clickhouse_url} is the embedded engine, which has no clusters"
        )


who_option = click.option(
    "--actor", help=f"who does it, for the record. [env: {ENV}ACTOR; default: the OS user]"
)


@main.command()
@settings_options(_retention_settings())
@click.option(
    "--below-eu-ai-act-floor",
    is_flag=True,
    help="allow a decisions window under 183 days (the EU AI Act's six-month floor): only "
    "for systems outside its scope",
)
@click.option("--dry-run", is_flag=True, help="say what would be pruned; change nothing")
@who_option
def retention(below_eu_ai_act_floor: bool, dry_run: bool, actor: str | None, **flags: Any) -> None:
    """Prune records older than their kind's window, except what a legal hold keeps.

    Run it as the admin (a cron job or a Kubernetes CronJob). Chains are pruned from their
    start only, up to the first event inside the window or held; each chain's boundary (seq
    and head hash) is recorded in retention_prunings before its rows are deleted, and verify
    walks the chain from there. Kinds without a window are kept.
    """
    from decision_audit.audit.access_log import AccessSettings
    from decision_audit.audit.retention import RetentionSettings, check_floor, prune

    s = build_settings(RetentionSettings, flags)
    _no_cluster_on_chdb(s)
    windows = s.windows()
    check_floor(windows, below_eu_ai_act_floor)
    if not windows:
        raise click.UsageError(
            "no retention window is set: give e.g. --retention-decisions-days 365 or "
            f"{ENV}RETENTION_DECISIONS_DAYS=365"
        )
    client = open_store(s)
    who = actor or AccessSettings().actor
    results = prune(
        client,
        s.database,
        windows,
        actor=who,
        below_floor=below_eu_ai_act_floor,
        cluster=s.cluster,
        dry_run=dry_run,
    )
    verb = "would prune" if dry_run else "pruned"
    for r in results:
        chains = f" in {r.chains} chain(s)" if r.skipped is not None else ""
        click.echo(f"{r.kind}: {verb} {r.rows} row(s){chains} before {r.horizon.isoformat()}")
        for why in r.skipped or ():
            click.echo(f"  skipped {why}", err=True)


@main.group()
def hold() -> None:
    """Legal holds: records retention never removes (recorded in legal_holds)."""


@hold.command("add")
@settings_options(MigrateSettings, ["clickhouse_url", "database"])
@click.option("--model", help="only decisions of this model_name")
@click.option("--deployment", help="only decisions of this deployment_id")
@click.option("--producer", help="only records of this producer_id")
@click.option("--since", help="only records at or after this ISO time (UTC if no zone)")
@click.option("--until", help="only records before this ISO time")
@click.option("--reason", required=True, help="why (e.g. the case or request reference)")
@who_option
def hold_add(
    model: str | None,
    deployment: str | None,
    producer: str | None,
    since: str | None,
    until: str | None,
    reason: str,
    actor: str | None,
    **flags: Any,
) -> None:
    """Place a legal hold. Without filters it holds everything; a filter a record kind has
    no column for (--model on the access log) holds all of that kind in the time range."""
    from decision_audit.audit.access_log import AccessSettings
    from decision_audit.audit.retention import add_hold

    s = build_settings(ClickHouseSettings, flags)
    client = open_store(s)
    h = add_hold(
        client,
        s.database,
        actor=actor or AccessSettings().actor,
        reason=reason,
        model=model,
        deployment=deployment,
        producer=producer,
        since=_parse_ts(since, "--since"),
        until=_parse_ts(until, "--until"),
    )
    click.echo(f"hold {h.hold_id} placed by {h.actor} on {h.describe()}")


@hold.command("list")
@store_options
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
def hold_list(fmt: str, **flags: Any) -> None:
    """The active legal holds, oldest first."""
    import json
    from dataclasses import asdict

    from decision_audit.audit.retention import active_holds

    s = build_settings(ClickHouseSettings, flags)
    holds = active_holds(open_store(s), s.database)
    if fmt == "json":
        click.echo(json.dumps([asdict(h) for h in holds], default=str, indent=2))
        return
    if not holds:
        click.echo("no active holds")
    for h in holds:
        click.echo(
            f"{h.hold_id}  {h.recorded_at.isoformat()}  {h.actor}: {h.describe()} — {h.reason}"
        )


@hold.command("release")
@store_options
@click.argument("hold_id")
@click.option("--reason", required=True, help="why the hold ends (e.g. the case closed)")
@who_option
def hold_release(hold_id: str, reason: str, actor: str | None, **flags: Any) -> None:
    """Release a legal hold (recorded as a release row; the hold's own row stays)."""
    from decision_audit.audit.access_log import AccessSettings
    from decision_audit.audit.retention import release_hold

    s = build_settings(ClickHouseSettings, flags)
    h = release_hold(
        open_store(s), s.database, hold_id, actor=actor or AccessSettings().actor, reason=reason
    )
    click.echo(f"hold {h.hold_id} on {h.describe()} released")


if __name__ == "__main__":
    main()

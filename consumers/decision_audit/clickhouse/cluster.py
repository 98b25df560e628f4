"""The migrations laid out on a ClickHouse cluster, rendered from the single-node statements.

The files in ``schemas/migrations`` are written for one server. For a cluster (a
``remote_servers`` name) each statement is rewritten from the same text, so a migration added
later is rendered too:

* Every DDL statement gets ``ON CLUSTER``.
* A MergeTree-family table ``T`` becomes ``T_local``, the same columns, keys and settings on
  ``Replicated…MergeTree('/clickhouse/tables/{shard}/<database>/T_local', '{replica}')``
  (``{shard}`` and ``{replica}`` are each server's macros; the database and table are written
  out, so the Keeper path never follows a rename), and ``T`` itself becomes a ``Distributed``
  table over ``T_local``: the worker, the audit tools and the dashboards query the names they
  query on one server. The sharding key keeps one chain on one shard, so chain checks and
  ``FINAL`` stay shard-local: ``cityHash64(producer_id)`` for a table with that column, else
  the hash of the table's sorting key (rows that ReplacingMergeTree collapses share a shard).
* ``non_replicated_deduplication_window`` becomes ``replicated_deduplication_window`` (same
  size): a replicated table deduplicates an insert token natively, in Keeper.
* A materialized view reads the local table of its source and writes the local table of its
  target, on every server: rollups are kept per shard and read through the target's
  Distributed table (the ``-Merge`` functions combine the shards' states).
* A plain view reads the Distributed tables. Its ``JOIN`` or ``IN`` over a sharded table is
  made ``GLOBAL``: the rows to match may be on any shard (an outcome's chain is not its
  decision's), and a JOIN of two Distributed tables is refused by ClickHouse
  (``distributed_product_mode = 'deny'``).
* ``ALTER TABLE T`` alters ``T_local``; its column commands alter ``T`` as well.
* ``INSERT`` (a backfill) goes through the Distributed table, synchronously
  (``distributed_foreground_insert``), so the migration is done when the rows are stored.
* The migrations-tracking table is replicated to every server (one Keeper path for the whole
  cluster, replica ``{shard}-{replica}``), not sharded.

A statement this module cannot render raises :class:`ClusterRenderError`: extend it rather
than write a migration only one layout can run.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from decision_audit.contract.errors import DecisionAuditError

LOCAL_SUFFIX = "_local"
"""``decisions`` is the Distributed table, ``decisions_local`` the replicated one on each shard"""
SHARD_PATH = "/clickhouse/tables/{{shard}}/{database}/{table}"
"""Keeper path of a sharded table: one replica set per shard"""
SHARD_REPLICA = "{replica}"
EVERYWHERE_PATH = "/clickhouse/tables/all/{database}/{table}"
"""Keeper path of a table replicated to every server of the cluster"""
EVERYWHERE_REPLICA = "{shard}-{replica}"
"""unique in the cluster as long as ``{replica}`` is unique within its shard"""
REPLICATED_SETTINGS = {"non_replicated_deduplication_window": "replicated_deduplication_window"}
"""single-node table settings and their replicated counterparts"""
CHAIN_KEY = "producer_id"
INSERT_SETTINGS = "distributed_foreground_insert = 1"

_CLAUSES = (
    ("PARTITION", "BY"),
    ("PRIMARY", "KEY"),
    ("ORDER", "BY"),
    ("SAMPLE", "BY"),
    ("TTL",),
    ("SETTINGS",),
    ("COMMENT",),
    ("AS",),
    ("POPULATE",),
    ("EMPTY",),
)
_COLUMN_COMMANDS = {"ADD", "DROP", "MODIFY", "ALTER", "RENAME", "COMMENT"}
"""``<verb> COLUMN …``: commands a Distributed table takes too (``CLEAR COLUMN`` is a mutation)"""
_NOT_COLUMNS = {"INDEX", "PROJECTION", "CONSTRAINT"}
_JOIN_WORDS = {"INNER", "LEFT", "RIGHT", "FULL", "CROSS", "OUTER", "SEMI", "ANTI", "ANY", "ALL"}
_JOIN_WORDS |= {"ASOF", "PASTE"}
"""what may stand between ``GLOBAL`` and ``JOIN``"""
_IDENT_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_TOKEN_RE = re.compile(
    r"\s+"
    r"|(?P<tok>'(?:[^'\\]|\\.)*'"  # string literal
    r"|`(?:[^`\\]|\\.)*`"  # quoted identifiers
    r'|"(?:[^"\\]|\\.)*"'
    r"|[A-Za-z_][A-Za-z0-9_]*"  # word
    r"|\d[A-Za-z0-9_.]*"  # number
    r"|.)",  # anything else, one character
    re.S,
)


class ClusterRenderError(DecisionAuditError, RuntimeError):
    """A migration statement has no cluster rendering yet; the message names it."""


def quote_ident(name: str) -> str:
    """``name`` as a ClickHouse identifier: bare when it can be, else back-quoted."""
    if _IDENT_RE.match(name):
        return name
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


@dataclass(frozen=True)
class _Tok:
    text: str
    start: int
    end: int
    depth: int
    """parentheses open around the token (a parenthesis and its match share one depth)"""

    def word(self) -> str:
        return self.text.upper() if self.text[:1].isalpha() or self.text[:1] == "_" else ""

    @property
    def name(self) -> str:
        """The identifier, unquoted."""
        if self.text[:1] in '`"' and len(self.text) > 1:
            return re.sub(r"\\(.)", r"\1", self.text[1:-1])
        return self.text


def _tokens(sql: str) -> list[_Tok]:
    out: list[_Tok] = []
    depth = 0
    for m in _TOKEN_RE.finditer(sql):
        text = m.group("tok")
        if text is None:
            continue
        if text == ")":
            depth -= 1
        out.append(_Tok(text, m.start(), m.end(), depth))
        if text == "(":
            depth += 1
    return out


class _Statement:
    """One statement's tokens, and edits to its text (spliced in by :meth:`text`)."""

    def __init__(self, sql: str) -> None:
        self.sql = sql
        self.toks = _tokens(sql)
        self._edits: list[tuple[int, int, str]] = []

    def words(self, i: int, *words: str) -> bool:
        """Tokens from ``i`` are the keywords ``words``."""
        end = i + len(words)
        return (
            i >= 0
            and end <= len(self.toks)
            and all(t.word() == w for t, w in zip(self.toks[i:end], words, strict=True))
        )

    def skip(self, i: int, *words: str) -> int:
        """``i`` past ``words`` if they are there, else ``i``."""
        return i + len(words) if self.words(i, *words) else i

    def find(self, i: int, *words: str, depth: int = 0) -> int | None:
        """The first index from ``i`` where ``words`` stand outside any parentheses."""
        for j in range(i, len(self.toks)):
            if self.toks[j].depth == depth and self.words(j, *words):
                return j
        return None

    def close(self, i: int) -> int:
        """Index of the parenthesis closing the one at ``i``."""
        depth = self.toks[i].depth
        for j in range(i + 1, len(self.toks)):
            if self.toks[j].text == ")" and self.toks[j].depth == depth:
                return j
        raise ClusterRenderError(f"unbalanced parentheses in: {self.head()}")

    def is_open(self, i: int) -> bool:
        return i < len(self.toks) and self.toks[i].text == "("

    def name(self, i: int) -> tuple[str | None, str, int]:
        """The (database, table) named from ``i``, and the index of the table's token."""
        if i + 2 < len(self.toks) and self.toks[i + 1].text == ".":
            return self.toks[i].name, self.toks[i + 2].name, i + 2
        if i >= len(self.toks):
            raise ClusterRenderError(f"no table name in: {self.head()}")
        return None, self.toks[i].name, i

    def span(self, i: int, j: int) -> str:
        """The original text of tokens ``i`` to ``j`` (inclusive)."""
        return self.sql[self.toks[i].start : self.toks[j].end]

    def clause_end(self, i: int) -> int:
        """The last token of the clause whose first token is at ``i`` (up to the next clause
        keyword outside parentheses, or the end of the statement)."""
        for j in range(i, len(self.toks)):
            if self.toks[j].depth == 0 and any(self.words(j, *c) for c in _CLAUSES):
                return j - 1
        return len(self.toks) - 1

    def replace(self, i: int, j: int, text: str) -> None:
        self._edits.append((self.toks[i].start, self.toks[j].end, text))

    def after(self, i: int, text: str) -> None:
        self._edits.append((self.toks[i].end, self.toks[i].end, text))

    def before(self, i: int, text: str) -> None:
        self._edits.append((self.toks[i].start, self.toks[i].start, text))

    def text(self) -> str:
        out = self.sql
        for start, end, new in sorted(self._edits, key=lambda e: (e[0], e[1]), reverse=True):
            out = out[:start] + new + out[end:]
        return out

    def head(self) -> str:
        first = " ".join(self.sql.split())
        return first if len(first) <= 80 else first[:77] + "..."

    def split(self, i: int, j: int) -> Iterator[tuple[int, int]]:
        """Token spans of the comma-separated items from ``i`` to ``j`` at their depth."""
        depth = self.toks[i].depth if i <= j else 0
        start = i
        for k in range(i, j + 1):
            if self.toks[k].text == "," and self.toks[k].depth == depth:
                yield start, k - 1
                start = k + 1
        if start <= j:
            yield start, j


@dataclass
class ClusterRenderer:
    """Renders single-node statements, in migration order, for ``cluster``.

    Stateful: it remembers the tables it has sharded, so that later statements (views,
    alters, inserts) address their local and Distributed tables. Render every migration from
    the first, even those already applied.
    """

    database: str
    cluster: str
    everywhere: frozenset[str] = frozenset({"schema_migrations"})
    """tables replicated to every server instead of sharded"""
    sharded: dict[str, str] = field(default_factory=dict)
    """table -> the sharding key of its Distributed table"""

    @property
    def on_cluster(self) -> str:
        return f" ON CLUSTER {quote_ident(self.cluster)}"

    def local(self, table: str) -> str:
        return table + LOCAL_SUFFIX

    def render(self, sql: str) -> list[str]:
        """The cluster statements that stand for the single-node statement ``sql``."""
        st = _Statement(sql)
        i = st.skip(st.skip(0, "CREATE"), "OR", "REPLACE")
        if st.words(0, "CREATE"):
            if st.words(i, "DATABASE"):
                return [self._on_cluster(st, st.skip(i + 1, "IF", "NOT", "EXISTS"))]
            if st.words(i, "TABLE"):
                return self._create_table(st, st.skip(i + 1, "IF", "NOT", "EXISTS"))
            if st.words(i, "MATERIALIZED", "VIEW"):
                start = st.skip(i + 2, "IF", "NOT", "EXISTS")
                return [self._create_view(st, start, materialized=True)]
            if st.words(i, "VIEW"):
                start = st.skip(i + 1, "IF", "NOT", "EXISTS")
                return [self._create_view(st, start, materialized=False)]
        elif st.words(0, "ALTER", "TABLE"):
            return self._alter(st, 2)
        elif st.words(0, "INSERT", "INTO"):
            return [self._insert(st, st.skip(2, "TABLE"))]
        elif st.words(0, "DROP"):
            return self._drop(st)
        elif st.words(0, "OPTIMIZE", "TABLE") or st.words(0, "TRUNCATE"):
            start = st.skip(st.skip(1, "TABLE"), "IF", "EXISTS")
            return [self._on_cluster(st, start, to_local=True)]
        raise ClusterRenderError(
            f"no cluster rendering for: {st.head()} (extend decision_audit/clickhouse/cluster.py)"
        )

    # -- statements ---------------------------------------------------------------------

    def _on_cluster(self, st: _Statement, i: int, *, to_local: bool = False) -> str:
        """``ON CLUSTER`` after the name at ``i`` (its local table's, with ``to_local``)."""
        db, table, at = st.name(i)
        if db is not None and to_local and table in self.sharded:
            self._own(st, db)
            st.replace(at, at, quote_ident(self.local(table)))
        st.after(at, self.on_cluster)
        return st.text()

    def _create_table(self, st: _Statement, i: int) -> list[str]:
        db, table, at = st.name(i)
        if db is None:
            raise ClusterRenderError(f"{table}: name its database ({{database}}.{table})")
        self._own(st, db)
        if not st.is_open(at + 1):
            raise ClusterRenderError(f"{table}: a cluster table needs its columns listed")
        columns_end = st.close(at + 1)
        columns = _column_names(st, at + 2, columns_end - 1)
        engine_at = st.find(columns_end + 1, "ENGINE")
        if engine_at is None:
            raise ClusterRenderError(f"{table}: name its engine")
        engine_end = self._replicate_engine(st, engine_at, db, table)
        order = st.find(engine_end + 1, "ORDER", "BY")
        self._translate_settings(st)
        if table in self.everywhere:
            st.after(at, self.on_cluster)
            return [st.text()]
        st.replace(at, at, quote_ident(self.local(table)))
        st.after(at, self.on_cluster)
        if CHAIN_KEY in columns:
            key = f"cityHash64({CHAIN_KEY})"
        elif order is not None:
            key = _hash_of(st, order + 2, st.clause_end(order + 2))
        else:
            key = "rand()"
        self.sharded[table] = key
        exists = " IF NOT EXISTS" if st.words(i - 3, "IF", "NOT", "EXISTS") else ""
        return [st.text(), self._distributed(db, table, exists)]

    def _distributed(self, db: str, table: str, exists: str) -> str:
        args = ", ".join((quote_str(self.cluster), quote_str(db), quote_str(self.local(table))))
        return (
            f"CREATE TABLE{exists} {quote_ident(db)}.{quote_ident(table)}{self.on_cluster}\n"
            f"AS {quote_ident(db)}.{quote_ident(self.local(table))}\n"
            f"ENGINE = Distributed({args}, {self.sharded[table]})"
        )

    def _replicate_engine(self, st: _Statement, i: int, db: str, table: str) -> int:
        """``ENGINE = XMergeTree(args)`` -> ``ReplicatedXMergeTree(path, replica, args)``;
        returns the index of the engine's last token."""
        j = i + 2 if i + 1 < len(st.toks) and st.toks[i + 1].text == "=" else i + 1
        engine = st.toks[j].text if j < len(st.toks) else ""
        if not engine.endswith("MergeTree") or engine.startswith(("Replicated", "Shared")):
            raise ClusterRenderError(
                f"{table}: engine {engine or '?'} has no replicated form here "
                "(a cluster table is a MergeTree-family table)"
            )
        if table in self.everywhere:
            path, replica = EVERYWHERE_PATH, EVERYWHERE_REPLICA
            name = table
        else:
            path, replica = SHARD_PATH, SHARD_REPLICA
            name = self.local(table)
        args = [quote_str(path.format(database=db, table=name)), quote_str(replica)]
        end = j
        if st.is_open(j + 1):
            end = st.close(j + 1)
            if end > j + 2:
                args.append(st.span(j + 2, end - 1))
        st.replace(j, end, f"Replicated{engine}({', '.join(args)})")
        return end

    def _translate_settings(self, st: _Statement) -> None:
        """Single-node table settings (``SETTINGS x = 1``, ``RESET SETTING x``) renamed."""
        for k, tok in enumerate(st.toks):
            new = REPLICATED_SETTINGS.get(tok.text.lower())
            following = st.toks[k + 1].text if k + 1 < len(st.toks) else ","
            if new is not None and following in ("=", ","):
                st.replace(k, k, new)

    def _create_view(self, st: _Statement, i: int, *, materialized: bool) -> str:
        """A view on every server; a materialized one between the local tables."""
        db, view, at = st.name(i)
        if db is not None:
            self._own(st, db)
        query = st.find(at + 1, "AS")
        if query is None:
            raise ClusterRenderError(f"{view}: a view needs AS SELECT")
        if materialized:
            if not st.words(at + 1, "TO"):
                raise ClusterRenderError(
                    f"materialized view {view}: write it with TO <table> (its own table, "
                    "created by the migration), so that the table is replicated and read "
                    "through a Distributed table"
                )
            if st.find(at + 1, "POPULATE") is not None:
                raise ClusterRenderError(
                    f"materialized view {view}: POPULATE would run on every replica; "
                    "backfill with INSERT … SELECT instead"
                )
            self._to_local(st, at + 2, query)
            self._to_local(st, query + 1, len(st.toks))
        else:
            self._global(st, query + 1)
        st.after(at, self.on_cluster)
        return st.text()

    def _global(self, st: _Statement, i: int) -> None:
        """``JOIN`` and ``IN`` from ``i`` whose right side reads a sharded table: ``GLOBAL``."""
        for k in range(i, len(st.toks)):
            word = st.toks[k].word()
            if word == "JOIN":
                first = k
                while first - 1 >= i and st.toks[first - 1].word() in _JOIN_WORDS:
                    first -= 1
            elif word == "IN":
                first = k - 1 if st.words(k - 1, "NOT") else k
            else:
                continue
            if st.toks[first - 1].word() in ("GLOBAL", "LOCAL") or not self._reads_sharded(
                st, k + 1
            ):
                continue
            st.before(first, "GLOBAL ")

    def _reads_sharded(self, st: _Statement, i: int) -> bool:
        """The table expression at ``i`` (a name or a subquery) reads a sharded table."""
        if i >= len(st.toks):
            return False
        if st.is_open(i):
            end = st.close(i)
            return any(self._names_sharded(st, k) for k in range(i + 1, end))
        return self._names_sharded(st, i)

    def _names_sharded(self, st: _Statement, k: int) -> bool:
        """Tokens from ``k`` name a sharded table of this database (``db.t``)."""
        if k > 0 and st.toks[k - 1].text == ".":
            return False
        db, table, _ = st.name(k)
        return db == self.database and table in self.sharded

    def _to_local(self, st: _Statement, i: int, j: int) -> None:
        """Qualified names of sharded tables from ``i`` to ``j`` name their local tables."""
        for k in range(i, min(j, len(st.toks) - 2)):
            a, dot, b = st.toks[k : k + 3]
            if dot.text == "." and a.name == self.database and b.name in self.sharded:
                if k > 0 and st.toks[k - 1].text == ".":
                    continue  # a.b.c: a column of a table, not a table
                st.replace(k + 2, k + 2, quote_ident(self.local(b.name)))

    def _alter(self, st: _Statement, i: int) -> list[str]:
        db, table, at = st.name(i)
        if db is not None:
            self._own(st, db)
        if db is None or table not in self.sharded:
            st.after(at, self.on_cluster)
            return [st.text()]
        commands = list(st.split(at + 1, len(st.toks) - 1))
        column_commands = [
            st.span(a, b)
            for a, b in commands
            if st.toks[a].word() in _COLUMN_COMMANDS and st.words(a + 1, "COLUMN")
        ]
        self._translate_settings(st)
        local = self._on_cluster(st, i, to_local=True)
        if not column_commands:
            return [local]
        distributed = (
            f"ALTER TABLE {quote_ident(db)}.{quote_ident(table)}{self.on_cluster}\n    "
            + ",\n    ".join(column_commands)
        )
        return [local, distributed]

    def _insert(self, st: _Statement, i: int) -> str:
        db, table, at = st.name(i)
        if db is None or db != self.database or table not in self.sharded:
            return st.text()
        j = st.close(at + 1) if st.is_open(at + 1) else at
        if st.words(j + 1, "SETTINGS"):
            body = next(
                (
                    k
                    for k in range(j + 2, len(st.toks))
                    if st.toks[k].depth == 0
                    and st.toks[k].word() in ("SELECT", "WITH", "VALUES", "FORMAT")
                ),
                len(st.toks),
            )
            st.after(body - 1, f", {INSERT_SETTINGS}")
        else:
            st.after(j, f" SETTINGS {INSERT_SETTINGS}")
        return st.text()

    def _drop(self, st: _Statement) -> list[str]:
        i = st.skip(1, "TEMPORARY")
        if not any(st.words(i, kind) for kind in ("TABLE", "VIEW", "DATABASE", "DICTIONARY")):
            raise ClusterRenderError(f"no cluster rendering for: {st.head()}")
        start = st.skip(i + 1, "IF", "EXISTS")
        db, table, _ = st.name(start)
        if st.words(i, "DATABASE") or db is None or table not in self.sharded:
            return [self._on_cluster(st, start)]
        distributed = self._on_cluster(_Statement(st.sql), start)
        if not st.words(len(st.toks) - 1, "SYNC"):
            # At once, not after the Atomic database's delay: the Keeper path is free for a
            # table of the same name created by a later statement.
            st.after(len(st.toks) - 1, " SYNC")
        local = self._on_cluster(st, start, to_local=True)
        del self.sharded[table]
        return [distributed, local]

    def _own(self, st: _Statement, db: str) -> None:
        if db != self.database:
            raise ClusterRenderError(
                f"statement addresses database {db!r}, not {self.database!r}: {st.head()}"
            )


def _column_names(st: _Statement, i: int, j: int) -> set[str]:
    names = set()
    for a, _ in st.split(i, j):
        if st.toks[a].word() not in _NOT_COLUMNS:
            names.add(st.toks[a].name)
    return names


def _hash_of(st: _Statement, i: int, j: int) -> str:
    """A sharding key from the sorting key at tokens ``i`` to ``j``."""
    if i > j:
        return "rand()"
    if st.is_open(i) and st.close(i) == j:
        inner = st.span(i + 1, j - 1) if j > i + 1 else ""
    else:
        inner = st.span(i, j)
    if not inner.strip() or re.fullmatch(r"tuple\(\s*\)", inner.strip(), re.I):
        return "rand()"
    return f"cityHash64({inner})"


def render_statements(renderer: ClusterRenderer, statements: Sequence[str]) -> tuple[str, ...]:
    """``statements`` rendered in order (one may become two)."""
    return tuple(out for sql in statements for out in renderer.render(sql))

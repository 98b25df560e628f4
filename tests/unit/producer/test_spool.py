"""The on-disk spool: format, crash recovery, cursor, bounds, and the producer's full policies."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from decision_audit import AuditProducer, DeliveryProblem
from decision_audit.contract import default_codec
from decision_audit.devtools.tansu_broker import free_port
from decision_audit.producer.spool import Spool, SpoolFull, SpoolLocked, SpoolRecord

RECORDS = [
    SpoolRecord("decisions", b"p-1", b"\xc3\x01" + bytes(range(256)), (("da-event-hash", b"h"),)),
    SpoolRecord("décisions-ü", None, b"", ()),
    SpoolRecord("t", b"", None, (("a", None), ("b", b"\x00" * 40), ("ключ", b"v"))),
    SpoolRecord("t", b"k", b"x" * 100_000, ()),
]


def _segments(d: Path) -> list[Path]:
    return sorted(d.glob("*.seg"))


def _drain(spool: Spool) -> list[SpoolRecord]:
    out = []
    while True:
        got = spool.read(100, 1 << 30)
        if not got:
            return out
        out += [rec for rec, _, _ in got]


def test_round_trip_keeps_every_byte(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 20, fsync="always") as spool:
        assert spool.empty and spool.read(10, 1 << 20) == []
        written = spool.append(r.encode() for r in RECORDS)
        assert spool.events == len(RECORDS) and spool.pending_bytes == written
        assert spool.disk_bytes == written
        got = spool.read(10, 1 << 30)
        assert [rec for rec, _, _ in got] == RECORDS
        assert sum(size for _, _, size in got) == written
        assert spool.read(10, 1 << 30) == []  # read position moved, cursor did not
        assert spool.events == len(RECORDS)
        for _, pos, size in got:
            spool.ack(pos, size)
        spool.commit()
        assert spool.empty and spool.pending_bytes == 0
    # Everything delivered: no segment is kept, and a reopened spool is empty.
    assert _segments(tmp_path) == []
    with Spool(tmp_path, 1 << 20) as spool:
        assert spool.empty and spool.read(10, 1 << 20) == []
        spool.append([RECORDS[0].encode()])
        assert _drain(spool) == [RECORDS[0]]


def test_torn_tail_is_truncated_on_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Spool(tmp_path, 1 << 20) as spool:
        spool.append(r.encode() for r in RECORDS[:3])
    (seg,) = _segments(tmp_path)
    intact = seg.stat().st_size
    with seg.open("ab") as f:  # a crash in the middle of writing the fourth record
        f.write(RECORDS[3].encode()[:5000])
    with caplog.at_level(logging.WARNING), Spool(tmp_path, 1 << 20) as spool:
        assert spool.events == 3 and spool.recovered_bytes == 5000
        assert seg.stat().st_size == intact
        spool.append([RECORDS[3].encode()])  # appends go after the last intact record
        assert _drain(spool) == RECORDS
    assert "torn" in caplog.text


def test_corrupt_record_ends_the_segment(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 20) as spool:
        spool.append(r.encode() for r in RECORDS[:3])
    (seg,) = _segments(tmp_path)
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit in the last record: its CRC no longer matches
    seg.write_bytes(bytes(data))
    with Spool(tmp_path, 1 << 20) as spool:
        assert spool.events == 2
        assert _drain(spool) == RECORDS[:2]


def test_cursor_resumes_after_reopen_without_duplicates(tmp_path: Path) -> None:
    records = [SpoolRecord("t", b"k", f"event-{i}".encode() * 500, ()) for i in range(40)]
    with Spool(tmp_path, 1 << 20, segment_bytes=16_384) as spool:
        spool.append(r.encode() for r in records)
        assert len(_segments(tmp_path)) > 3  # rolled over several segments
        got = spool.read(25, 1 << 30)
        for _, pos, size in got[:20]:  # 25 were sent, 20 acknowledged before the "crash"
            spool.ack(pos, size)
        spool.commit()
        assert spool.cursor == got[19][1]
        assert all(int(p.stem) >= spool.cursor[0] for p in _segments(tmp_path))  # delivered
    with Spool(tmp_path, 1 << 20, segment_bytes=16_384) as spool:
        assert spool.events == 20
        assert _drain(spool) == records[20:]
        spool.rewind()  # a replay failed: read again from the cursor
        assert _drain(spool) == records[20:]


def test_rewind_returns_to_the_cursor(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 20) as spool:
        spool.append(r.encode() for r in RECORDS)
        first = spool.read(1, 1 << 30)
        spool.ack(first[0][1], first[0][2])
        spool.read(10, 1 << 30)
        spool.rewind()
        assert _drain(spool) == RECORDS[1:]


def test_one_process_per_spool_directory(tmp_path: Path) -> None:
    with Spool(tmp_path, 1 << 20), pytest.raises(SpoolLocked, match="in use"):
        Spool(tmp_path, 1 << 20)
    Spool(tmp_path, 1 << 20).close()  # released on close


def test_room_counts_what_is_on_disk(tmp_path: Path) -> None:
    with Spool(tmp_path, 10_000) as spool:
        assert spool.room == 10_000
        n = spool.append([SpoolRecord("t", b"k", b"x" * 4000).encode()])
        assert spool.room == 10_000 - n


# -- the producer's spool_full_policy, with a real client and no broker ------------------------


def _offline_producer(tmp_path: Path, policy: str, **kw: object) -> AuditProducer:
    """A producer whose broker is unreachable and whose client queue holds one message, so
    every further event goes to a 4 KiB spool."""
    problems: list[DeliveryProblem] = kw.pop("problems", [])  # type: ignore[assignment]
    return AuditProducer(
        f"127.0.0.1:{free_port()}",
        producer_id="offline",
        topic="t",
        spool_dir=tmp_path / "spool",
        spool_max_bytes=4096,
        spool_full_policy=policy,
        on_error=problems.append,
        queue_buffering_max_messages=1,
        **kw,  # type: ignore[arg-type]
    )


def _eventually(cond: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def _log_until_full(p: AuditProducer) -> int:
    for i in range(200):
        p.log_decision("m", "1", {"i": i}, "yes")
        if p.stats.dropped:
            return i
    raise AssertionError(f"spool never filled: {p.stats}")


def test_full_spool_drops_counts_and_reports(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    problems: list[DeliveryProblem] = []
    p = _offline_producer(tmp_path, "drop", problems=problems)
    with caplog.at_level(logging.ERROR):
        _log_until_full(p)
        last = p.last_seq
        p.log_decision("m", "1", {"more": 1}, "yes")  # returns; dropped, not recorded
    assert p.stats.dropped == 2 and p.last_seq == last  # the chain skips nothing
    # The event in the client queue still had room held for it: it comes back to the spool.
    _eventually(lambda: p.stats.spool_events == p.stats.logged == p.stats.spooled)
    assert 0 < p.stats.spool_bytes <= 4096
    assert [x.kind for x in problems] == ["dropped", "dropped"]
    assert "spool full" in problems[0].reason and problems[0].seq == last + 1
    assert "spool full" in caplog.text
    left = p.close(timeout=0.2)
    assert left == p.stats.logged  # all of them kept on disk for the next start


def test_full_spool_raises_under_raise_policy(tmp_path: Path) -> None:
    problems: list[DeliveryProblem] = []
    p = _offline_producer(tmp_path, "raise", problems=problems)
    with pytest.raises(SpoolFull):
        for i in range(200):
            p.log_decision("m", "1", {"i": i}, "yes")
    assert p.stats.dropped == 1 and [x.kind for x in problems] == ["dropped"]
    last = p.last_seq
    with pytest.raises(SpoolFull):
        p.log_decision("m", "1", {}, "yes")
    assert p.last_seq == last and p.stats.dropped == 2
    p.close(timeout=0.2)


def test_full_spool_blocks_then_drops_under_block_policy(tmp_path: Path) -> None:
    p = _offline_producer(tmp_path, "block", spool_block_timeout=0.05)
    _log_until_full(p)  # each call waited for room, none came, so it dropped
    assert p.stats.dropped == 1
    p.close(timeout=0.2)


def test_spool_left_by_a_closed_producer_is_picked_up(tmp_path: Path) -> None:
    p = _offline_producer(tmp_path, "drop")
    for i in range(5):
        p.log_decision("m", "1", {"i": i}, "yes")
    assert p.close(timeout=0.2) == 5  # the queued one was taken back from the client too
    q = _offline_producer(tmp_path, "drop")
    try:
        assert q.stats.spool_events == 5
    finally:
        assert q.close(timeout=0.2) == 5


def test_messages_the_client_timed_out_are_spooled_in_chain_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    problems: list[DeliveryProblem] = []
    with caplog.at_level(logging.INFO):
        p = AuditProducer(
            f"127.0.0.1:{free_port()}",
            producer_id="timeouts",
            topic="t",
            spool_dir=tmp_path / "spool",
            spool_after=60,  # leave it to librdkafka's message timeout
            message_timeout_ms=300,
            on_error=problems.append,
        )
        # The client reports all brokers down at start; once that settles, the producer
        # sends directly again and the client takes the events, then times them out.
        _eventually(lambda: "client queue settled" in caplog.text and p._delivery.direct)
        for i in range(5):
            p.log_decision("m", "1", {"i": i}, "yes")
        _eventually(lambda: p.stats.spooled == 5)
    assert "Message timed out" in caplog.text
    assert (p.stats.failed, p.stats.dropped, problems) == (0, 0, [])
    assert p.close(timeout=0.2) == 5
    codec = default_codec()
    with Spool(tmp_path / "spool", 1 << 20) as spool:
        seqs = [codec.decode(r.value or b"").record["seq"] for r in _drain(spool)]
    assert seqs == [1, 2, 3, 4, 5]

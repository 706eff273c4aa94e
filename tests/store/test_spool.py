"""The spool file's crash-safety rules, on the file itself."""

from __future__ import annotations

from pathlib import Path

import orjson

from service.store.records import Record
from service.store.spool import Spool
from tests.store.factories import make_check, make_triple


def read_all(spool: Spool, batch_size: int = 4) -> list[Record]:
    records: list[Record] = []
    offset = 0
    while True:
        batch, offset = spool.read_claimed(offset, batch_size)
        if not batch:
            return records
        records.extend(batch)


def test_round_trip_keeps_every_field(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.jsonl")
    records = [make_check(1, score=None, error="judge timed out"), make_triple(2)]
    spool.append(records)
    assert spool.depth == 2
    assert spool.claim()
    assert read_all(spool) == records


def test_claim_does_not_overwrite_an_unfinished_replay(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.jsonl")
    first = [make_check(index) for index in range(3)]
    spool.append(first)
    assert spool.claim()
    later = [make_check(index) for index in range(3, 5)]
    spool.append(later)
    assert spool.depth == 5

    # A replay failed: the claimed file is claimed again, untouched, before the newer records.
    assert spool.claim()
    assert read_all(spool) == first
    spool.release()
    assert spool.depth == 2
    assert spool.claim()
    assert read_all(spool) == later
    spool.release()
    assert spool.depth == 0
    assert not spool.claim()


def test_depth_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    spool = Spool(path)
    spool.append([make_check(index) for index in range(4)])
    assert spool.claim()
    spool.append([make_check(9)])
    assert Spool(path).depth == 5


def test_torn_last_line_is_set_aside_and_later_appends_stay_readable(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    whole = make_check(1)
    path.write_bytes(orjson.dumps(whole.to_json()) + b"\n" + b'{"kind": "check", "request_')
    spool = Spool(path)  # a crash cut the last append short
    after = make_triple(2)
    spool.append([after])
    assert spool.claim()
    assert read_all(spool) == [whole, after]
    rejected = [orjson.loads(line) for line in spool.dead_letter_path.read_bytes().splitlines()]
    assert len(rejected) == 1
    assert rejected[0]["line"].startswith('{"kind": "check"')


def test_spool_and_dead_letter_files_are_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.jsonl")
    spool.append([make_check(1)])
    assert spool.claim()
    spool.append([make_check(2)])
    spool.dead_letter([(make_check(3), "refused")])
    for path in (spool.path, spool.replaying_path, spool.dead_letter_path):
        assert path.stat().st_mode & 0o777 == 0o600, path


def test_lines_that_parse_but_are_not_records_go_to_the_dead_letter(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    good = [make_check(1), make_triple(2)]
    wrong_type = {**make_check(3).to_json(), "score": [1]}  # no driver binds a list
    lines = [orjson.dumps(good[0].to_json()), b"[1, 2]", orjson.dumps(wrong_type),
             orjson.dumps(good[1].to_json())]
    path.write_bytes(b"\n".join(lines) + b"\n")
    spool = Spool(path)
    assert spool.claim()
    assert read_all(spool) == good
    assert spool.dead_lettered == 2
    assert len(spool.dead_letter_path.read_bytes().splitlines()) == 2

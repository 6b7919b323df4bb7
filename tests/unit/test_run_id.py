"""Run ids: `<UTC time>-<6 hex characters>`, never one a date parser reads as a time (GX parses its run name, the run
id, for a time when it renders Data Docs: "…-3388ad" read as a UTC offset of 33:88 hours failed a validate stage)."""

from __future__ import annotations

import re
import uuid

import flows.run_record as run_record
from features.manifest import reads_as_time


def test_a_suffix_that_reads_as_a_time_is_drawn_again(monkeypatch):
    drawn = iter(["3388ad", "2313ad", "abc123"])  # an offset out of range, a valid time, none
    monkeypatch.setattr(run_record.uuid, "uuid4", lambda: uuid.UUID(next(drawn) + "0" * 26))
    run_id = run_record.new_run_id()
    assert re.fullmatch(r"\d{8}T\d{6}-abc123", run_id)


def test_run_ids_are_unique_and_none_reads_as_a_time():
    ids = {run_record.new_run_id() for _ in range(200)}
    assert len(ids) == 200
    assert not any(reads_as_time(run_id) for run_id in ids)
    assert reads_as_time("20261206T093518-3388ad") and reads_as_time("20261206T093518-2313ad")
    assert reads_as_time("5537131626864212")  # 16 digits, a batch id one time in ~2,000: dateutil overflows

"""Ingest, clean, label and the manifest: rows are never lost, bad rows carry a reason."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from features.clean import clean_batch
from features.ingest import compute_batch_id, ingest_batch
from examples.digits.labelling import caption_digit
from features.label import build_labels
from features.label_functions import load_labelling_functions
from features.manifest import parse_manifest
from features.records import QuarantineRecord, StageReport
from tests.unit.task_support import DIGITS
from tests.unit.params_support import clean_params, label_params


def _write_batch(folder: Path, rows: list[dict], files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def _png(seed: int) -> bytes:
    from io import BytesIO

    pixels = np.random.default_rng(seed).integers(0, 255, (16, 16), dtype=np.uint8)
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_manifest_quarantines_unsafe_and_malformed_rows(tmp_path):
    batch = tmp_path / "batch"
    batch.mkdir()
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"x")
    (batch / "link.png").symlink_to(outside)
    lines = [
        '{"sample_id": "a", "captured_at": "2026-01-01T00:00:00Z", "image": "../secret.png"}',
        '{"sample_id": "b", "captured_at": "2026-01-01T00:00:00Z", "image": "/etc/passwd"}',
        '{"sample_id": "c", "captured_at": "2026-01-01T00:00:00Z", "image": "link.png"}',
        "not json",
        '{"captured_at": "2026-01-01T00:00:00Z"}',
        '{"sample_id": "d", "captured_at": "yesterday"}',
        '{"sample_id": "e", "captured_at": "2026-01-01T00:00:00Z", "caption": "a seven"}',
    ]
    rows, rejected = parse_manifest("\n".join(lines), batch)
    assert [r["sample_id"] for r in rows] == ["e"]
    assert [q.reason for q in rejected] == ["unsafe_path"] * 3 + ["bad_json", "missing_field", "bad_timestamp"]
    assert all(q.detail for q in rejected)


def test_stage_report_refuses_to_lose_rows():
    with pytest.raises(ValueError, match="lost rows"):
        StageReport("clean", rows_in=3, rows_out=1, quarantined=[QuarantineRecord("a", "clean", "missing_file", "x")])
    with pytest.raises(ValueError, match="unknown quarantine reason"):
        StageReport("clean", 1, 0, [QuarantineRecord("a", "clean", "bad_vibes", "x")])


def test_ingest_same_bytes_is_skipped_and_a_changed_file_is_a_new_batch(tmp_path):
    rows = [{"sample_id": "s1", "captured_at": "2026-01-01T00:00:00Z", "image": "img/s1.png"}]
    source = _write_batch(tmp_path / "landing", rows, {"img/s1.png": _png(1)})
    lake = tmp_path / "lake"
    first = ingest_batch(source, lake)
    again = ingest_batch(source, lake)
    assert again.batch_id == first.batch_id and again.report.skipped and not first.report.skipped
    assert len([p for p in lake.iterdir() if not p.name.startswith(".")]) == 1
    (source / "img/s1.png").write_bytes(_png(2))
    assert compute_batch_id(source) != first.batch_id
    assert not ingest_batch(source, lake).report.skipped


def test_a_file_written_while_it_is_copied_is_refused_not_snapshotted(tmp_path, monkeypatch):
    """An upload still writing a file while ingest copies it: the snapshot would hold a mix of two versions,
    so nothing lands, and nothing is left to clear by hand."""
    import features.ingest as ingest
    from features.records import BatchError

    rows = [{"sample_id": "s1", "captured_at": "2026-01-01T00:00:00Z", "image": "img/s1.png"}]
    source = _write_batch(tmp_path / "landing", rows, {"img/s1.png": _png(1)})
    copy = ingest._copy_and_hash

    def copy_while_the_upload_goes_on(path, target, made):
        sha = copy(path, target, made)
        with open(path, "ab") as upload:  # the uploader's next block arrives while the copy ends
            upload.write(b"more")
        return sha

    monkeypatch.setattr(ingest, "_copy_and_hash", copy_while_the_upload_goes_on)
    with pytest.raises(BatchError, match="s1.png changed while it was ingested"):
        ingest_batch(source, tmp_path / "lake")
    # no snapshot, no staging folder left (the ingest lock's own folder is not state)
    assert [p.name for p in (tmp_path / "lake").iterdir() if p.name != ".locks"] == []
    monkeypatch.undo()
    assert not ingest_batch(source, tmp_path / "lake").report.skipped  # once the upload is complete


def test_clean_quarantines_every_demo_fault_with_its_reason(demo_batch_factory, tmp_path):
    source = demo_batch_factory(samples=80, seed=3, fault_rate=0.05)
    faults = json.loads((source / "_faults.json").read_text())
    ingested = ingest_batch(source, tmp_path / "raw")
    result = clean_batch(ingested.batch_dir, tmp_path / "clean", clean_params(DIGITS))
    by_reason: dict[str, set[str]] = {}
    for record in result.report.quarantined:
        by_reason.setdefault(record.reason, set()).add(record.sample_id)
    for kind in ("corrupt_image", "corrupt_audio", "missing_file", "duplicate_sample"):
        assert set(faults[kind]) <= by_reason.get(kind, set()), kind
    report = result.report
    assert report.rows_in == report.rows_out + report.rows_quarantined == ingested.report.rows_out
    assert result.rows["sample_id"].is_unique
    # Audio is resampled to 16 kHz mono, peak-normalised; images are grayscale.
    first = result.rows.iloc[0]
    import soundfile as sf

    wave, rate = sf.read(str(result.batch_dir / first["audio"]))
    assert rate == 16000 and wave.ndim == 1 and np.isclose(np.abs(wave).max(), 1.0, atol=1e-3)
    assert Image.open(result.batch_dir / first["image"]).mode == "L"


def test_clean_rejects_oversized_images_before_decoding(tmp_path):
    big = Image.new("L", (3000, 3000))
    from io import BytesIO

    buffer = BytesIO()
    big.save(buffer, format="PNG")
    rows = [{"sample_id": "big", "captured_at": "2026-01-01T00:00:00Z", "image": "big.png"}]
    ingested = ingest_batch(_write_batch(tmp_path / "landing", rows, {"big.png": buffer.getvalue()}), tmp_path / "raw")
    result = clean_batch(ingested.batch_dir, tmp_path / "clean", clean_params(DIGITS, max_image_pixels=1_000_000))
    assert [(q.reason, "exceeds the limit" in q.detail) for q in result.report.quarantined] == [("too_large", True)]


@pytest.mark.parametrize(
    ("caption", "language", "expected"),
    [
        ("a handwritten seven", "en", "7"),
        ("eine handgeschriebene Sieben", "de", "7"),
        ("un sept écrit à la main", "fr", "7"),
        ("un siete escrito a mano", "es", "7"),
        ("une huit", "fr", "8"),
        ("la cifra sette", "it", "7"),
        ("het cijfer een", "nl", "1"),
        ("een handgeschreven twee", "nl", "2"),
        ("the digit 7", "en", "7"),
        ("a scanned digit", "en", None),
        ("un chiffre numérisé", "fr", None),  # "un" is the article here, not "one"
        ("een gescand cijfer", "nl", None),
        ("two or three", "en", None),
        ("10 digits", "en", None),
        (None, "en", None),
    ],
)
def test_the_digits_example_caption_lf_names_the_class(caption, language, expected):
    assert caption_digit({"caption": caption, "language": language}) == expected


def test_labels_prefer_humans_and_agree_with_demo_truth(demo_batch_factory, tmp_path):
    source = demo_batch_factory(samples=80, seed=4, fault_rate=0.0)
    ingested = ingest_batch(source, tmp_path / "raw")
    rows = clean_batch(ingested.batch_dir, tmp_path / "clean", clean_params(DIGITS)).rows
    functions = load_labelling_functions(["examples.digits.labelling:caption_digit"])
    labels, stats = build_labels(rows, DIGITS, None, label_params(), functions)
    truth = {json.loads(l)["sample_id"]: json.loads(l)["digit"] for l in (source / "_truth.jsonl").read_text().splitlines()}
    labelled = labels.dropna(subset=["label"])
    accuracy = np.mean([truth[s] == int(l) for s, l in zip(labelled["sample_id"], labelled["label"])])
    assert accuracy > 0.95
    human = rows["label"].notna().to_numpy()
    assert stats.human == int(human.sum())
    assert stats.human + stats.label_model + stats.unlabelled == len(rows)
    assert (labels.loc[human, "label_source"] == "human").all()
    assert (labels.loc[human, "label_confidence"] == 1.0).all()


def test_clean_gives_the_same_result_however_chunks_are_cut_and_mapped(demo_batch_factory, tmp_path, monkeypatch):
    """The Prefect flow maps chunks as tasks; any chunking and mapper must give the same table and quarantine."""
    import features.clean
    from features.clean import clean_rows_chunk

    monkeypatch.setattr(features.clean, "CHUNK_ROWS", 16)  # 80 rows: 5 chunks on 4 workers, 2 on one

    source = demo_batch_factory(samples=80, seed=3, fault_rate=0.05)
    ingested = ingest_batch(source, tmp_path / "raw")
    threaded = clean_batch(ingested.batch_dir, tmp_path / "a", clean_params(DIGITS))

    def last_chunk_first(chunks, raw_dir, out_dir, params):
        return [clean_rows_chunk(chunk, raw_dir, out_dir, params) for chunk in reversed(chunks)][::-1]

    looped = clean_batch(ingested.batch_dir, tmp_path / "b", clean_params(DIGITS, workers=1), map_chunks=last_chunk_first)
    assert threaded.report.reason_counts().get("duplicate_sample")  # duplicates across chunk boundaries
    assert threaded.rows.equals(looped.rows) and list(threaded.rows["sample_id"]) == sorted(threaded.rows["sample_id"])
    assert threaded.report.to_summary() == looped.report.to_summary()


def _folder_contents(folder: Path) -> dict[str, object]:
    """Every file under `folder` by relative name: its bytes, or for an .npz its arrays (a zip member carries its
    write time)."""
    contents: dict[str, object] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if path.suffix == ".npz":
            with np.load(path) as archive:
                contents[str(path.relative_to(folder))] = {k: (v.dtype.str, v.shape, v.tobytes()) for k, v in archive.items()}
        else:
            contents[str(path.relative_to(folder))] = path.read_bytes()
    return contents


def test_clean_runs_no_more_threads_than_the_process_has_cpus(demo_batch_factory, tmp_path, monkeypatch):
    """On one usable CPU the chunks are cleaned in the calling thread (more threads would decode nothing sooner
    and only hold memory), and every file clean writes is what four threads write."""
    import threading

    import features.clean

    monkeypatch.setattr(features.clean, "CHUNK_ROWS", 16)  # 80 rows: 5 chunks
    source = demo_batch_factory(samples=80, seed=3, fault_rate=0.05)
    ingested = ingest_batch(source, tmp_path / "raw")
    monkeypatch.setattr(features.clean, "usable_cpus", lambda: 8)
    threaded = clean_batch(ingested.batch_dir, tmp_path / "a", clean_params(DIGITS, workers=4))

    cleaning_threads: set[int] = set()
    clean_rows_chunk = features.clean.clean_rows_chunk

    def recording_thread(*args):
        cleaning_threads.add(threading.get_ident())
        return clean_rows_chunk(*args)

    monkeypatch.setattr(features.clean, "clean_rows_chunk", recording_thread)
    monkeypatch.setattr(features.clean, "usable_cpus", lambda: 1)
    inline = clean_batch(ingested.batch_dir, tmp_path / "b", clean_params(DIGITS, workers=4))

    assert cleaning_threads == {threading.get_ident()}
    assert threaded.rows.equals(inline.rows)
    assert threaded.report.to_summary() == inline.report.to_summary()
    assert _folder_contents(threaded.batch_dir) == _folder_contents(inline.batch_dir)

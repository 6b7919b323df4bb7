"""A corpus of broken landing batches: every bad row is quarantined with its reason, or the batch is
refused with a BatchError that says what is wrong; never an unexpected traceback, never a lost row."""

from __future__ import annotations

import json
import os
import struct
import threading
import time
import zlib
from collections import Counter
from io import BytesIO
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from features.clean import CLEAN_COLUMNS, CleanParams, clean_batch
from features.ingest import ingest_batch
from features.io import load_quarantine, save_quarantine
from features.phash import compute_dhash, find_near_matches, hamming_distance
from features.records import REASONS, BatchError
from tests.unit.task_support import DIGITS, SHAPES
from models.inputs import load_clean_inputs
from tests.unit.params_support import clean_params, input_spec, validate_params

T0 = "2026-01-01T00:00:00Z"
KEPT = "kept"


def _row(sample_id, **fields) -> dict:
    return {"sample_id": sample_id, "captured_at": T0, **fields}


def _png(seed: int = 0, side: int = 16) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (side, side), dtype=np.uint8)
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming width x height 1-bit pixels, with a few bytes of data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _wav(seconds: float = 0.2, rate: int = 16000, freq: float = 440.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buffer = BytesIO()
    sf.write(buffer, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def _npy(array: np.ndarray, allow_pickle: bool = False) -> bytes:
    buffer = BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _npy_header_only(shape: tuple[int, ...]) -> bytes:
    """A .npy header claiming a float64 array of `shape`, followed by a few bytes only."""
    buffer = BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f8", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + bytes(64)


class _Trap:
    """Unpickling it touches `marker`: proof that a pickled .npy was (or was not) unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _write(folder: Path, lines: list[dict | bytes], files: dict[str, bytes] | None = None) -> Path:
    """A landing batch: `lines` are rows (dicts, written as JSON) or raw manifest lines (bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in (files or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    raw = [line if isinstance(line, bytes) else json.dumps(line).encode() for line in lines]
    (folder / "manifest.jsonl").write_bytes(b"".join(line + b"\n" for line in raw))
    return folder


def _ingest_and_clean(source: Path, work: Path, params: CleanParams | None = None):
    """Ingest and clean, checking the bookkeeping every stage must keep."""
    ingested = ingest_batch(source, work / "raw")
    cleaned = clean_batch(ingested.batch_dir, work / "clean", params or clean_params(DIGITS, workers=2))
    for report in (ingested.report, cleaned.report):
        assert report.rows_in == report.rows_out + report.rows_quarantined
        assert all(q.reason in REASONS and q.detail for q in report.quarantined)
        save_quarantine(work / "quarantine", ingested.batch_id, report)  # records must stay writable
    assert cleaned.report.rows_in == ingested.report.rows_out
    assert len(cleaned.rows) == cleaned.report.rows_out
    assert len(load_quarantine(work / "quarantine")) == ingested.report.rows_quarantined + cleaned.report.rows_quarantined
    return ingested, cleaned


def _outcomes(ingested, cleaned) -> Counter:
    """(sample_id, stage, reason) per manifest row; kept rows are (sample_id, "kept", None)."""
    found = Counter((q.sample_id, q.stage, q.reason) for q in [*ingested.report.quarantined, *cleaned.report.quarantined])
    found.update((sid, KEPT, None) for sid in cleaned.rows["sample_id"])
    return found


# ---- the corpus: each case writes a batch and returns the outcome of every row --------------------

Case = Callable[[Path, Path], list[tuple]]  # (batch folder, a folder outside it) -> expected outcomes
CASES: dict[str, Case] = {}


def case(function: Case) -> Case:
    CASES[function.__name__] = function
    return function


def _one_file(field: str, name: str, data: bytes, stage: str, reason: str) -> Case:
    def build(batch: Path, outside: Path) -> list[tuple]:
        _write(batch, [_row("bad", **{field: name}), _row("good", caption="a seven")], {name: data})
        return [("bad", stage, reason), ("good", KEPT, None)]

    return build


CASES.update({
    "zero_byte_png": _one_file("image", "a.png", b"", "clean", "corrupt_image"),
    "truncated_png": _one_file("image", "a.png", _png(1)[:60], "clean", "corrupt_image"),
    "text_named_png": _one_file("image", "a.png", b"this is a text file, not an image\n", "clean", "corrupt_image"),
    "huge_dimension_png": _one_file("image", "a.png", _png_header_only(50_000, 50_000), "clean", "too_large"),
    "zero_byte_wav": _one_file("audio", "a.wav", b"", "clean", "corrupt_audio"),
    "truncated_wav": _one_file("audio", "a.wav", _wav(0.5)[:4000], "clean", "corrupt_audio"),
    "wav_header_only": _one_file("audio", "a.wav", _wav(0.5)[:44], "clean", "corrupt_audio"),
    "nan_depth": _one_file("depth", "d.npy", _npy(np.array([[0.0, np.nan]])), "clean", "corrupt_sensor"),
    "infinite_thermal": _one_file("thermal", "t.npy", _npy(np.array([[np.inf, 1.0]])), "clean", "corrupt_sensor"),
    "float64_beyond_float32": _one_file("depth", "d.npy", _npy(np.array([[1e300]])), "clean", "corrupt_sensor"),
    "imu_wrong_shape": _one_file("imu", "i.npy", _npy(np.zeros((3, 10), np.float32)), "clean", "corrupt_sensor"),
    "imu_empty": _one_file("imu", "i.npy", _npy(np.zeros((6, 0), np.float32)), "clean", "corrupt_sensor"),
    "imu_header_claims_huge_shape": _one_file("imu", "i.npy", _npy_header_only((6, 10**10)), "clean", "corrupt_sensor"),
    "npz_as_sensor": _one_file("depth", "d.npy", b"PK\x03\x04" + b"\0" * 40, "clean", "corrupt_sensor"),
})


@case
def missing_file(batch: Path, outside: Path) -> list[tuple]:
    _write(batch, [_row("bad", image="nowhere.png")])
    return [("bad", "clean", "missing_file")]


@case
def directory_as_file(batch: Path, outside: Path) -> list[tuple]:
    _write(batch, [_row("bad", image="images")], {"images/x.png": _png()})
    return [("bad", "clean", "missing_file")]


@case
def labels(batch: Path, outside: Path) -> list[tuple]:
    """A label names one of the task's classes (an integer 7 names class "7"); anything else is bad_label."""
    values = {"int": 7, "name": "7", "whole_float": 7.0, "eleven": 11, "minus": -1, "seven": "seven", "half": 3.5,
              "true": True, "list": [1], "huge": 2**70, "null": None}
    _write(batch, [_row(name, caption=f"digit {name}", label=value) for name, value in values.items()])
    kept = {"int", "name", "whole_float", "null"}
    return [(name, KEPT, None) if name in kept else (name, "clean", "bad_label") for name in values]


@case
def duplicate_ids_and_content(batch: Path, outside: Path) -> list[tuple]:
    _write(batch, [_row("a", caption="one"), _row("a", caption="two"), _row("b", caption="one")])
    return [("a", KEPT, None), ("a", "clean", "duplicate_sample"), ("b", "clean", "duplicate_sample")]


@case
def missing_required_fields(batch: Path, outside: Path) -> list[tuple]:
    _write(batch, [{"captured_at": T0, "caption": "x"}, {"sample_id": "no-time", "caption": "x"},
                   _row("   ", caption="x"), _row("null-time", captured_at=None, caption="x")])
    return [(None, "ingest", "missing_field"), ("no-time", "ingest", "missing_field"),
            (None, "ingest", "missing_field"), ("null-time", "ingest", "missing_field")]


@case
def wrong_field_types(batch: Path, outside: Path) -> list[tuple]:
    _write(batch, [_row({"id": 1}, caption="x"), _row(True, caption="x"), _row("num-path", image=5),
                   _row("num-caption", caption=42), _row("list-language", caption="x", language=["en"]),
                   _row(17, caption="an integer id is fine")])
    return [(None, "ingest", "bad_field"), (None, "ingest", "bad_field"), ("num-path", "ingest", "bad_field"),
            ("num-caption", "clean", "bad_field"), ("list-language", "clean", "bad_field"), ("17", KEPT, None)]


@case
def timestamps(batch: Path, outside: Path) -> list[tuple]:
    _write(batch, [_row("far-past", captured_at="1500-01-01T00:00:00Z", caption="x"),
                   _row("epoch-int", captured_at=1767225600, caption="x"),
                   _row("nonsense", captured_at="yesterday", caption="x"),
                   _row("naive", captured_at="2026-01-01T00:00:00", caption="x")])
    return [("far-past", "ingest", "bad_timestamp"), ("epoch-int", "ingest", "bad_timestamp"),
            ("nonsense", "ingest", "bad_timestamp"), ("naive", KEPT, None)]


@case
def extra_fields_and_empty_paths(batch: Path, outside: Path) -> list[tuple]:
    _write(batch, [_row("extra", caption="x", camera={"iso": 100}, image="", audio_sha256="forged")])
    return [("extra", KEPT, None)]


@case
def no_modality(batch: Path, outside: Path) -> list[tuple]:
    _write(batch, [_row("nothing"), _row("blank-caption", caption="   ")])
    return [("nothing", "clean", "no_modality"), ("blank-caption", "clean", "no_modality")]


@case
def invalid_utf8_in_caption(batch: Path, outside: Path) -> list[tuple]:
    bad = b'{"sample_id": "bad", "captured_at": "' + T0.encode() + b'", "caption": "caf\xe9 \xff"}'
    _write(batch, [bad, _row("good", caption="café")])
    return [(None, "ingest", "bad_encoding"), ("good", KEPT, None)]


@case
def lone_surrogate_escape(batch: Path, outside: Path) -> list[tuple]:
    bad = b'{"sample_id": "bad", "captured_at": "' + T0.encode() + b'", "caption": "x \\ud800"}'
    _write(batch, [bad, _row("good", caption="x")])
    return [(None, "ingest", "bad_encoding"), ("good", KEPT, None)]


@case
def non_standard_json(batch: Path, outside: Path) -> list[tuple]:
    lines = [
        b'{"sample_id": "nan", "captured_at": "2026-01-01T00:00:00Z", "caption": "x", "label": NaN}',
        b'{"sample_id": "twice", "sample_id": "again", "captured_at": "2026-01-01T00:00:00Z", "caption": "x"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'["an", "array"]',
        b'{"sample_id": "cut", "captured_at": "2026-01-01T0',
    ]
    _write(batch, [*lines, _row("good", caption="x")])
    return [(None, "ingest", "bad_json")] * len(lines) + [("good", KEPT, None)]


@case
def bom_crlf_and_line_separator(batch: Path, outside: Path) -> list[tuple]:
    """A BOM and CRLF line ends are accepted; U+2028 inside a caption is text, not a line break."""
    rows = [_row("first", caption="one\u2028two"), _row("second", caption="x")]
    text = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n\r\n"
    batch.mkdir(parents=True)
    (batch / "manifest.jsonl").write_bytes(b"\xef\xbb\xbf" + text.encode())
    return [("first", KEPT, None), ("second", KEPT, None)]


@case
def path_traversal(batch: Path, outside: Path) -> list[tuple]:
    outside.mkdir()
    (outside / "secret.png").write_bytes(_png(9))
    _write(batch, [_row("dotdot", image="../outside/secret.png"), _row("absolute", image=str(outside / "secret.png")),
                   _row("link-out", image="link.png"), _row("loop", image="loop-a"), _row("nul", image="a\u0000b.png"),
                   _row("inside-dotdot", image="images/../ok.png")], {"ok.png": _png(3)})
    (batch / "link.png").symlink_to(outside / "secret.png")
    (batch / "loop-a").symlink_to(batch / "loop-b")
    (batch / "loop-b").symlink_to(batch / "loop-a")
    return [(sid, "ingest", "unsafe_path") for sid in ("dotdot", "absolute", "link-out", "loop", "nul")] + [
        ("inside-dotdot", KEPT, None)
    ]


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_quarantined_with_its_reason(name, tmp_path):
    expected = CASES[name](tmp_path / "landing", tmp_path / "outside")
    ingested, cleaned = _ingest_and_clean(tmp_path / "landing", tmp_path)
    assert _outcomes(ingested, cleaned) == Counter(expected)


# ---- what the corpus cannot show by reason codes alone -------------------------------------------


def test_huge_dimension_image_is_refused_from_its_header(tmp_path):
    _write(tmp_path / "landing", [_row("huge", image="a.png"), _row("big", image="b.png")],
           {"a.png": _png_header_only(50_000, 50_000), "b.png": _png_header_only(5_000, 5_000)})
    started = time.perf_counter()
    _, cleaned = _ingest_and_clean(tmp_path / "landing", tmp_path)
    assert time.perf_counter() - started < 120  # 2.5 gigapixels are never decoded (decoding would take far longer, or fail)
    details = {q.sample_id: q.detail for q in cleaned.report.quarantined}
    assert "2500000000 pixels" in details["huge"] and "5000x5000 exceeds the limit of 4000000" in details["big"]


def test_sensor_arrays_over_the_limit_are_refused_from_their_header(tmp_path):
    _write(tmp_path / "landing", [_row("big", depth="d.npy")], {"d.npy": _npy(np.ones((4, 4), np.float32))})
    _, cleaned = _ingest_and_clean(tmp_path / "landing", tmp_path, clean_params(DIGITS, max_sensor_values=10))
    assert [(q.reason, q.detail) for q in cleaned.report.quarantined] == [
        ("too_large", "depth holds 16 values, more than the limit of 10")
    ]


def test_truncated_wav_says_so(tmp_path):
    _write(tmp_path / "landing", [_row("cut", audio="a.wav")], {"a.wav": _wav(0.5)[:4000]})
    _, cleaned = _ingest_and_clean(tmp_path / "landing", tmp_path)
    (record,) = cleaned.report.quarantined
    assert "truncated" in record.detail and "declares" in record.detail


def test_pickled_npy_is_never_unpickled(tmp_path):
    sprung, armed = tmp_path / "sprung", tmp_path / "armed"
    np.load(BytesIO(_npy(np.array([_Trap(sprung)], dtype=object), allow_pickle=True)), allow_pickle=True)
    assert sprung.exists()  # the trap works when unpickled
    data = _npy(np.array([_Trap(armed)], dtype=object), allow_pickle=True)
    _write(tmp_path / "landing", [_row("pickle", depth="d.npy")], {"d.npy": data})
    _, cleaned = _ingest_and_clean(tmp_path / "landing", tmp_path)
    assert [q.reason for q in cleaned.report.quarantined] == ["corrupt_sensor"]
    assert not armed.exists()


def test_extra_fields_are_kept_as_metadata(tmp_path):
    _write(tmp_path / "landing", [_row("s", caption="x", camera={"iso": 100}, operator="ana")])
    _, cleaned = _ingest_and_clean(tmp_path / "landing", tmp_path)
    assert json.loads(cleaned.rows.loc[0, "meta"]) == {"camera": {"iso": 100}, "operator": "ana"}


def test_ids_that_differ_only_in_unsafe_characters_get_separate_files(tmp_path):
    _write(tmp_path / "landing", [_row("a/b", image="1.png"), _row("a_b", image="2.png"), _row("../x", image="3.png")],
           {"1.png": _png(1), "2.png": _png(2), "3.png": _png(3)})
    _, cleaned = _ingest_and_clean(tmp_path / "landing", tmp_path)
    paths = cleaned.rows["image"].tolist()
    assert len(set(paths)) == 3 and all(p.startswith("images/") and "/" not in p[7:] for p in paths)
    originals = {sid: np.asarray(Image.open(BytesIO(_png(i)))) for sid, i in (("a/b", 1), ("a_b", 2), ("../x", 3))}
    for sid, path in zip(cleaned.rows["sample_id"], paths):
        assert np.array_equal(np.asarray(Image.open(cleaned.batch_dir / path)), originals[sid])


# ---- clean reads nothing outside the batch -------------------------------------------------------


def _never_opened(fifo: Path, run: Callable[[], object], seconds: float = 30.0):
    """Run `run`; opening `fifo` for reading would block it, so finishing in time proves it was never opened."""
    outcome: dict[str, object] = {}
    thread = threading.Thread(target=lambda: outcome.update(result=run()), daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # a reader is blocked on it: release it
        thread.join(5)
        pytest.fail(f"{fifo} was opened")
    return outcome["result"]


def test_symlink_out_of_the_batch_is_quarantined_and_never_opened(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    os.mkfifo(outside / "secret.png")
    batch = _write(tmp_path / "landing", [_row("link", image="img/link.png"), _row("fifo", audio="pipe.wav")])
    (batch / "img").mkdir()
    (batch / "img/link.png").symlink_to(outside / "secret.png")
    os.mkfifo(batch / "pipe.wav")  # inside the batch, but not a regular file: never opened either
    ingested, cleaned = _never_opened(outside / "secret.png", lambda: _ingest_and_clean(batch, tmp_path))
    assert _outcomes(ingested, cleaned) == Counter([("link", "ingest", "unsafe_path"), ("fifo", "clean", "missing_file")])


def test_clean_rechecks_paths_of_a_raw_batch(tmp_path):
    """Clean does not trust the lake: a raw batch holding a link out (however it got there) is refused."""
    outside = tmp_path / "outside"
    outside.mkdir()
    os.mkfifo(outside / "secret.png")
    raw = tmp_path / "raw" / "b1"
    raw.mkdir(parents=True)
    (raw / "link.png").symlink_to(outside / "secret.png")
    (raw / "ok.png").write_bytes(_png(1))
    (raw.parent / "other.png").write_bytes(_png(2))
    rows = [_row("link", image="link.png", image_sha256="1" * 64),
            _row("dotdot", image="../other.png", image_sha256="2" * 64),
            _row("ok", image="ok.png", image_sha256="3" * 64)]
    (raw / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = _never_opened(outside / "secret.png", lambda: clean_batch(raw, tmp_path / "clean", clean_params(DIGITS)))
    assert sorted((q.sample_id, q.reason) for q in result.report.quarantined) == [("dotdot", "unsafe_path"), ("link", "unsafe_path")]
    assert result.rows["sample_id"].tolist() == ["ok"]


# ---- whole batches that cannot be read ------------------------------------------------------------


@pytest.mark.parametrize(
    ("manifest", "match"),
    [
        (b"sample_id,captured_at,image\ns1,2026-01-01,a.png\n", "not JSON Lines: none of its 2 non-blank lines"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "not JSON Lines"),
        (json.dumps([_row("a", caption="x")]).encode(), "expected a JSON object, got list"),
    ],
    ids=["csv", "binary", "json-array"],
)
def test_a_manifest_that_is_not_json_lines_is_refused(tmp_path, manifest, match):
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "manifest.jsonl").write_bytes(manifest)
    with pytest.raises(BatchError, match=match) as caught:
        ingest_batch(tmp_path / "landing", tmp_path / "raw")
    assert "expected one object per line" in str(caught.value)
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


def test_a_folder_without_manifest_is_refused(tmp_path):
    (tmp_path / "landing").mkdir()
    with pytest.raises(BatchError, match="manifest.jsonl is missing"):
        ingest_batch(tmp_path / "landing", tmp_path / "raw")
    with pytest.raises(BatchError, match="is not a folder"):
        ingest_batch(tmp_path / "nowhere", tmp_path / "raw")
    with pytest.raises(BatchError, match="not an ingested batch"):
        clean_batch(tmp_path / "landing", tmp_path / "clean", clean_params(DIGITS))
    assert issubclass(BatchError, ValueError)


def test_a_manifest_linking_out_of_the_batch_is_refused(tmp_path):
    (tmp_path / "elsewhere.jsonl").write_text(json.dumps(_row("a", caption="x")) + "\n")
    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "manifest.jsonl").symlink_to(tmp_path / "elsewhere.jsonl")
    with pytest.raises(BatchError, match="escapes the batch folder"):
        ingest_batch(tmp_path / "landing", tmp_path / "raw")


def test_an_empty_manifest_is_an_empty_batch_that_validation_rejects(tmp_path):
    from features.validate import BatchRejected, validate_rows

    (tmp_path / "landing").mkdir()
    (tmp_path / "landing" / "manifest.jsonl").write_bytes(b"\n  \n")
    ingested, cleaned = _ingest_and_clean(tmp_path / "landing", tmp_path)
    assert (ingested.report.rows_in, ingested.report.rows_out, cleaned.report.rows_in) == (0, 0, 0)
    assert tuple(cleaned.rows.columns) == CLEAN_COLUMNS and cleaned.rows.empty
    with pytest.raises(BatchRejected, match="clean rows table is empty"):
        validate_rows(cleaned.rows, tmp_path / "gx", validate_params(n_classes=10), ingested.batch_id)


# ---- near-duplicate images -----------------------------------------------------------------------


def _jpeg(png: bytes, quality: int = 95) -> bytes:
    buffer = BytesIO()
    Image.open(BytesIO(png)).convert("L").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _digit_png() -> bytes:
    """A smooth 32x32 picture, like the demo's upscaled digits (noise would not survive JPEG)."""
    y, x = np.mgrid[0:32, 0:32]
    pixels = (127 + 120 * np.sin(x / 5.0) * np.cos(y / 7.0)).astype(np.uint8)
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_re_encoded_image_with_the_same_audio_and_caption_is_a_near_duplicate(tmp_path):
    png, wav, other_wav = _digit_png(), _wav(0.3, freq=440), _wav(0.3, freq=660)
    rows = [_row("orig", image="a.png", audio="a.wav", caption="a seven"),
            _row("copy", image="b.jpg", audio="b.wav", caption="a seven"),  # same audio bytes, re-encoded image
            _row("new-voice", image="b.jpg", audio="c.wav", caption="a seven"),  # same picture, other speech
            _row("new-caption", image="b.jpg", audio="b.wav", caption="the digit seven")]
    files = {"a.png": png, "b.jpg": _jpeg(png), "a.wav": wav, "b.wav": wav, "c.wav": other_wav}
    _write(tmp_path / "landing", rows, files)
    ingested, cleaned = _ingest_and_clean(tmp_path / "landing", tmp_path)
    assert _outcomes(ingested, cleaned) == Counter(
        [("orig", KEPT, None), ("copy", "clean", "near_duplicate"), ("new-voice", KEPT, None), ("new-caption", KEPT, None)]
    )
    (record,) = cleaned.report.quarantined
    assert "kept sample 'orig'" in record.detail
    assert not (cleaned.batch_dir / "images" / "copy.png").exists()  # its outputs went with it

    off = _ingest_and_clean(tmp_path / "landing", tmp_path / "off", clean_params(DIGITS, near_duplicate_bits=-1))[1]
    assert len(off.rows) == 4
    with pytest.raises(ValueError, match="near_duplicate_bits"):
        clean_params(DIGITS, near_duplicate_bits=64)


def test_the_demo_batch_loses_no_row_to_near_duplicates(demo_batch_factory, tmp_path):
    source = demo_batch_factory(samples=200, seed=5)
    ingested, cleaned = _ingest_and_clean(source, tmp_path)
    assert "near_duplicate" not in cleaned.report.reason_counts()
    # The check is not vacuous: many demo images are near-identical (same digit image, shifted a pixel);
    # only their different speech and captions keep them apart.
    hashes = [int(h, 16) for h in cleaned.rows["image_dhash"].dropna()]
    close = sum(hamming_distance(a, b) <= 4 for i, a in enumerate(hashes) for b in hashes[i + 1 :])
    assert close > 0


def test_near_hash_search_finds_what_a_row_by_row_search_finds():
    """Rows in order, each matched to the closest earlier kept row with its key (earliest on ties); a
    matched row is not kept, so a later row is never matched to it."""
    rng = np.random.default_rng(0)
    pictures = [int.from_bytes(rng.bytes(8), "big") for _ in range(30)]
    hashes, keys = [], []
    for _ in range(400):  # look-alikes of a few pictures, some beyond the limit, under three keys
        flips = rng.choice(64, size=int(rng.integers(0, 9)), replace=False)
        hashes.append(pictures[int(rng.integers(len(pictures)))] ^ sum(1 << int(bit) for bit in flips))
        keys.append(int(rng.integers(0, 3)))
    match, distance = find_near_matches(np.array(keys), np.array(hashes, np.uint64), max_bits=4)
    kept: list[int] = []
    for row, (key, value) in enumerate(zip(keys, hashes)):
        best = min(((hamming_distance(value, hashes[k]), k) for k in kept if keys[k] == key), default=(99, -1))
        if best[0] <= 4:
            assert (match[row], distance[row]) == (best[1], best[0])
        else:
            assert match[row] == -1
            kept.append(row)
    assert 0 < (match >= 0).sum() < len(hashes) - len(pictures)  # both outcomes occur


def test_dhash_survives_jpeg_and_tells_pictures_apart():
    png = _digit_png()
    original = compute_dhash(np.asarray(Image.open(BytesIO(png)).convert("L")))
    recoded = compute_dhash(np.asarray(Image.open(BytesIO(_jpeg(png, quality=80)))))
    flipped = compute_dhash(np.asarray(Image.open(BytesIO(png)).convert("L"))[:, ::-1].copy())
    assert hamming_distance(original, recoded) <= 4 < hamming_distance(original, flipped)


def test_a_row_quarantined_for_one_file_leaves_no_output_behind(tmp_path):
    _write(tmp_path / "landing", [_row("half", image="a.png", audio="a.wav")], {"a.png": _png(1), "a.wav": b""})
    _, cleaned = _ingest_and_clean(tmp_path / "landing", tmp_path)
    assert [q.reason for q in cleaned.report.quarantined] == ["corrupt_audio"]
    media = [path for sub in ("images", "audio", "sensors") for path in (cleaned.batch_dir / sub).rglob("*")]
    assert not media and len(load_clean_inputs(cleaned.batch_dir, cleaned.rows, input_spec())) == 0

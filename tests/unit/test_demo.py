"""Behaviour of the demo data source: determinism, faults, labels, variety, drift and splits."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from examples.digits.demo import (
    DIGIT_WORDS,
    DRIFT_KINDS,
    FAULT_KINDS,
    DemoBatch,
    generate_demo_batch,
    source_image_indices,
)
from examples.digits.speech import (
    ESPEAK_TRAINING_VOICES,
    FESTIVAL_TRAINING_VOICES,
    HELD_OUT_ACCENTS,
    HELD_OUT_ENGINE_VOICES,
    HELD_OUT_VOICES,
    TRAIN_ACCENT_LANGUAGES,
    TRAIN_VARIANTS,
    engine_of,
)

SAMPLES = 60
SEED = 3


def file_hashes(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def read_wave(path: Path) -> np.ndarray:
    wave, _ = sf.read(path, dtype="float64")
    return wave


def word_in(word: str, caption: str) -> bool:
    return word.lower() in re.findall(r"\w+", caption.lower())


def image_decodes(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except Exception:
        return False


def audio_decodes(path: Path) -> bool:
    try:
        return len(read_wave(path)) > 0
    except Exception:
        return False


@pytest.fixture(scope="module")
def batches(tmp_path_factory: pytest.TempPathFactory) -> dict[str | None, DemoBatch]:
    """One clean batch per drift kind (and None), all from the same seed, made once."""
    root = tmp_path_factory.mktemp("drift")
    return {
        drift: generate_demo_batch(root / str(drift), samples=SAMPLES, seed=SEED, drift=drift, fault_rate=0.0)
        for drift in (None, *DRIFT_KINDS)
    }


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> DemoBatch:
    return generate_demo_batch(tmp_path_factory.mktemp("faulty") / "batch", samples=SAMPLES, seed=SEED)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> DemoBatch:
    folder = tmp_path_factory.mktemp("large") / "batch"
    return generate_demo_batch(folder, samples=200, seed=11, fault_rate=0.0)


# --- determinism -----------------------------------------------------------------------------


def test_same_arguments_give_identical_bytes(tmp_path: Path, faulty: DemoBatch) -> None:
    again = generate_demo_batch(tmp_path / "again", samples=SAMPLES, seed=SEED)
    assert file_hashes(again.out) == file_hashes(faulty.out)
    assert again.faults == faulty.faults


def test_different_seed_gives_different_files(tmp_path: Path, faulty: DemoBatch) -> None:
    other = generate_demo_batch(tmp_path / "other", samples=SAMPLES, seed=SEED + 1)
    first, second = file_hashes(faulty.out), file_hashes(other.out)
    assert first["manifest.jsonl"] != second["manifest.jsonl"]
    shared = set(first.values()) & set(second.values())  # a digit image may recur by chance
    assert len(shared) < 0.1 * len(first)


def test_captured_at_comes_from_seed_not_clock(batches: dict[str | None, DemoBatch]) -> None:
    rows = read_jsonl(batches[None].out / "manifest.jsonl")
    assert rows[0]["captured_at"] == "2026-01-04T00:00:00Z"  # 2026-01-01 + SEED days
    assert rows[59]["captured_at"] == "2026-01-04T00:00:59Z"  # + row number seconds


# --- manifest and faults ---------------------------------------------------------------------


def test_manifest_rows_carry_every_field(faulty: DemoBatch) -> None:
    rows = read_jsonl(faulty.out / "manifest.jsonl")
    assert len(rows) == faulty.rows
    for row in rows:
        assert row["image"] == f"images/{row['sample_id']}.png"
        assert row["audio"] == f"audio/{row['sample_id']}.wav"
        assert row["source"] == "demo"
        assert row["label"] is None or row["label"] in range(10)
        assert 120 <= row["speed"] <= 200
        assert (30 <= row["pitch"] <= 70) if row["engine"] == "espeak-ng" else row["pitch"] is None
        assert row["voice"] and row["language"] and row["caption"]
        assert row["engine"] == engine_of(row["voice"]) and row["voice_group"] == "train"


def test_faults_are_present_listed_and_real(faulty: DemoBatch) -> None:
    out = faulty.out
    rows = read_jsonl(out / "manifest.jsonl")
    by_id = {row["sample_id"]: row for row in rows}
    assert json.loads((out / "_faults.json").read_text()) == faulty.faults
    assert set(faulty.faults) == set(FAULT_KINDS)
    assert all(faulty.faults[kind] for kind in FAULT_KINDS)

    assert all(not image_decodes(out / by_id[s]["image"]) for s in faulty.faults["corrupt_image"])
    assert all(not audio_decodes(out / by_id[s]["audio"]) for s in faulty.faults["corrupt_audio"])
    for sample_id in faulty.faults["missing_file"]:
        row = by_id[sample_id]
        assert not (out / row["image"]).exists() or not (out / row["audio"]).exists()

    lines = (out / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    repeated = {json.loads(line)["sample_id"] for line, n in Counter(lines).items() if n > 1}
    assert repeated == set(faulty.faults["duplicate_sample"])
    assert faulty.rows == SAMPLES + len(faulty.faults["duplicate_sample"])

    broken = {s for kind in ("corrupt_image", "corrupt_audio", "missing_file") for s in faulty.faults[kind]}
    for row in rows:
        if row["sample_id"] not in broken:
            assert image_decodes(out / row["image"]) and audio_decodes(out / row["audio"])


def test_zero_fault_rate_gives_a_clean_batch(batches: dict[str | None, DemoBatch]) -> None:
    clean = batches[None]
    rows = read_jsonl(clean.out / "manifest.jsonl")
    assert clean.faults == {kind: [] for kind in FAULT_KINDS}
    assert clean.rows == SAMPLES == len({row["sample_id"] for row in rows})
    assert all(image_decodes(clean.out / row["image"]) for row in rows)
    assert all(audio_decodes(clean.out / row["audio"]) for row in rows)


def test_images_are_32px_grayscale_white_ink_on_black(batches: dict[str | None, DemoBatch]) -> None:
    stack = []
    for path in sorted((batches[None].out / "images").glob("*.png")):
        with Image.open(path) as image:
            assert image.mode == "L" and image.size == (32, 32)
            stack.append(np.asarray(image))
    pixels = np.stack(stack)  # (N, 32, 32)
    assert pixels[:, [0, 0, -1, -1], [0, -1, 0, -1]].mean() < 20  # black background
    assert pixels.mean() < 100 and pixels.max(axis=(1, 2)).min() > 200  # bright strokes on it


# --- labels, captions, variety ---------------------------------------------------------------


def test_about_label_rate_rows_are_labelled_with_the_true_digit(large: DemoBatch) -> None:
    rows = read_jsonl(large.out / "manifest.jsonl")
    truth = {t["sample_id"]: t["digit"] for t in read_jsonl(large.out / "_truth.jsonl")}
    labelled = [row for row in rows if row["label"] is not None]
    assert large.labelled == len(labelled)
    assert 0.12 <= len(labelled) / len(rows) <= 0.28
    assert all(row["label"] == truth[row["sample_id"]] for row in labelled)


def test_captions_name_the_digit_except_a_few_generic_ones(large: DemoBatch) -> None:
    rows = read_jsonl(large.out / "manifest.jsonl")
    truth = {t["sample_id"]: t["digit"] for t in read_jsonl(large.out / "_truth.jsonl")}
    named = [
        word_in(DIGIT_WORDS[row["language"]][truth[row["sample_id"]]], row["caption"])
        for row in rows
    ]
    assert 0.8 <= sum(named) / len(rows) < 1.0


def test_voices_and_languages_vary(large: DemoBatch) -> None:
    rows = read_jsonl(large.out / "manifest.jsonl")
    voices = {row["voice"] for row in rows}
    assert len(voices) >= 40 and voices <= set(ESPEAK_TRAINING_VOICES) | set(FESTIVAL_TRAINING_VOICES)
    assert {row["engine"] for row in rows} == {"espeak-ng", "festival"}
    assert len({row["language"] for row in rows}) >= 3


def test_progress_reports_every_sample(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    generate_demo_batch(tmp_path / "b", samples=5, fault_rate=0.0, progress=lambda *call: calls.append(call))
    assert calls == [(n, 5) for n in range(1, 6)]


# --- drift -----------------------------------------------------------------------------------


def manifest_column(batch: DemoBatch, field: str) -> list:
    return [row[field] for row in read_jsonl(batch.out / "manifest.jsonl")]


def test_accent_drift_uses_only_unseen_voices(batches: dict[str | None, DemoBatch]) -> None:
    drifted = set(manifest_column(batches["accent"], "voice"))
    assert drifted and drifted <= set(HELD_OUT_ACCENTS)
    assert set(manifest_column(batches["accent"], "voice_group")) == {"held_out_accents"}


def test_language_drift_uses_only_unseen_languages(batches: dict[str | None, DemoBatch]) -> None:
    drifted = set(manifest_column(batches["language"], "language"))
    assert drifted and not drifted & set(manifest_column(batches[None], "language"))


def test_class_prior_drift_skews_towards_zero_and_one(batches: dict[str | None, DemoBatch]) -> None:
    def share_of_zeros_and_ones(batch: DemoBatch) -> float:
        digits = [t["digit"] for t in read_jsonl(batch.out / "_truth.jsonl")]
        return sum(d in (0, 1) for d in digits) / len(digits)

    assert share_of_zeros_and_ones(batches["class_prior"]) >= 0.45
    assert share_of_zeros_and_ones(batches[None]) <= 0.35


def test_rotation_drift_changes_every_image_and_no_audio(batches: dict[str | None, DemoBatch]) -> None:
    plain, rotated = file_hashes(batches[None].out), file_hashes(batches["rotation"].out)
    images = [name for name in plain if name.startswith("images/")]
    audio = [name for name in plain if name.startswith("audio/")]
    assert all(plain[name] != rotated[name] for name in images)
    assert all(plain[name] == rotated[name] for name in audio)


def test_noise_drift_adds_strong_noise(batches: dict[str | None, DemoBatch]) -> None:
    ratios = []
    for row in read_jsonl(batches[None].out / "manifest.jsonl"):
        clean = read_wave(batches[None].out / row["audio"])
        noisy = read_wave(batches["noise"].out / row["audio"])
        lead = 1600  # 0.1 s at 16 kHz: noise alone, before the word
        assert len(noisy) >= len(clean) + 2 * lead  # the recorder ran before and after the word
        ratios.append(np.std(noisy[:lead]) / np.std(clean))
    assert min(ratios) > 0.3  # at most ~10 dB signal-to-noise on every clip


def test_gain_drift_makes_clips_quiet_or_clipped(batches: dict[str | None, DemoBatch]) -> None:
    kinds = Counter()
    for row in read_jsonl(batches["gain"].out / "manifest.jsonl"):
        wave = read_wave(batches["gain"].out / row["audio"])
        quiet = np.abs(wave).max() < 0.05
        clipped = np.mean(np.abs(wave) > 0.99) > 0.01
        assert quiet or clipped
        kinds[quiet] += 1
    assert kinds[True] and kinds[False]


def test_unknown_drift_names_the_accepted_kinds(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rotation"):
        generate_demo_batch(tmp_path / "b", samples=5, drift="sideways")
    assert not (tmp_path / "b").exists()


# --- splits and safety -----------------------------------------------------------------------


def test_golden_and_train_never_share_a_source_image(
    tmp_path: Path, batches: dict[str | None, DemoBatch]
) -> None:
    assert not set(source_image_indices("golden")) & set(source_image_indices("train"))
    golden = generate_demo_batch(tmp_path / "g", samples=SAMPLES, seed=SEED, split="golden", fault_rate=0.0)
    used = {
        split: {truth["image_index"] for truth in read_jsonl(batch.out / "_truth.jsonl")}
        for split, batch in (("train", batches[None]), ("golden", golden))
    }
    assert used["golden"] <= set(source_image_indices("golden"))
    assert used["train"] <= set(source_image_indices("train"))
    assert not used["golden"] & used["train"]


def test_unknown_split_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="golden"):
        generate_demo_batch(tmp_path / "b", samples=5, split="test")


def test_refuses_to_overwrite_an_existing_batch(tmp_path: Path) -> None:
    (tmp_path / "manifest.jsonl").write_text("keep me\n")
    with pytest.raises(FileExistsError, match="manifest.jsonl"):
        generate_demo_batch(tmp_path, samples=5)
    assert (tmp_path / "manifest.jsonl").read_text() == "keep me\n"


def test_golden_batch_is_fully_labelled_faultless_and_from_the_golden_images(tmp_path: Path) -> None:
    """`golden=True` (what `flywheel demo-data --golden` passes along with params.yaml's demo.options)
    wins over the options' fault and label rates."""
    golden = generate_demo_batch(tmp_path / "g", samples=SAMPLES, seed=SEED, golden=True, fault_rate=0.5, label_rate=0.0)
    rows = read_jsonl(golden.out / "manifest.jsonl")
    assert golden.rows == SAMPLES == len({row["sample_id"] for row in rows})
    assert golden.labelled == SAMPLES and all(row["label"] is not None for row in rows)
    assert golden.faults == {kind: [] for kind in FAULT_KINDS}
    used = {truth["image_index"] for truth in read_jsonl(golden.out / "_truth.jsonl")}
    assert used <= set(source_image_indices("golden"))


def test_the_tests_golden_batch_is_the_one_flywheel_demo_data_golden_writes(tmp_path: Path) -> None:
    """conftest makes the example's golden batch when it is missing; it must be the bytes `make test` writes."""
    import yaml
    from typer.testing import CliRunner

    from flows.cli import app
    from tests.conftest import ensure_example_golden, example_params

    raw = example_params()
    raw["task"]["golden"] = "made/golden"
    raw["demo"]["golden_samples"] = 8
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    made = ensure_example_golden(params)
    assert made == (tmp_path / "made" / "golden").resolve()
    assert sorted(p.name for p in made.parent.iterdir()) == ["golden"]  # nothing of the work folder left
    result = CliRunner().invoke(app, ["demo-data", "--golden", "--out", str(tmp_path / "cli"), "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert file_hashes(made) == file_hashes(tmp_path / "cli")


# --- speech: what training hears, and what only the golden batch holds -------------------------


def test_no_held_out_speech_is_in_the_training_pool() -> None:
    training = set(ESPEAK_TRAINING_VOICES) | set(FESTIVAL_TRAINING_VOICES)
    assert not training & (set(HELD_OUT_VOICES) | set(HELD_OUT_ACCENTS) | set(HELD_OUT_ENGINE_VOICES))
    assert {engine_of(v) for v in training} == {"espeak-ng", "festival"}
    held_out_languages = {accent.split("-")[0] for accent in HELD_OUT_ACCENTS}
    # no voice of a held-out accent's language (nor a dialect of it), in any engine
    assert not {lang.split("-")[0] for lang in TRAIN_ACCENT_LANGUAGES} & held_out_languages
    festival_italian_russian_slt = {"festival:pc_diphone", "festival:lp_diphone", "festival:msu_ru_nsh_clunits",
                                    "festival:cmu_us_slt_arctic_hts"}
    assert not set(FESTIVAL_TRAINING_VOICES) & festival_italian_russian_slt
    variants = {v.split("+")[1] for v in HELD_OUT_VOICES if "+" in v}
    assert variants and not variants & set(TRAIN_VARIANTS)


def test_golden_batch_holds_every_kind_of_held_out_speech(tmp_path: Path) -> None:
    batch = generate_demo_batch(tmp_path / "golden", samples=80, seed=7, golden=True)
    rows = read_jsonl(batch.out / "manifest.jsonl")
    groups = Counter(row["voice_group"] for row in rows)
    assert set(groups) == {"train", "held_out_voices", "held_out_accents", "held_out_engine"}
    assert all(n >= 10 for n in groups.values())
    assert {row["engine"] for row in rows if row["voice_group"] == "held_out_engine"} == {"flite"}
    for row in rows:  # every clip is real speech: decodes, lasts, and is not silent
        wave = read_wave(batch.out / row["audio"])
        assert len(wave) > 4000 and np.abs(wave).max() > 0.05, row["voice"]


@pytest.mark.parametrize("voice", ["festival:kal_diphone", "festival:upc_ca_ona_hts"])
def test_festival_clips_follow_the_drawn_speed(tmp_path: Path, voice: str) -> None:
    """One festival process speaks a batch's festival rows; a slower draw gives a longer clip, from a diphone
    voice (Duration_Stretch) and from an HTS voice (which ignores that and takes the HTS engine's speech rate:
    its pauses grow, not its phones)."""
    from examples.digits.speech import Utterance, speak_festival

    slow, fast = (Utterance(voice, "seven", wpm, None, tmp_path / f"{wpm}.wav") for wpm in (120, 200))
    speak_festival([slow, fast])
    assert len(read_wave(slow.path)) > 1.3 * len(read_wave(fast.path))


@pytest.mark.parametrize("voice", sorted(FESTIVAL_TRAINING_VOICES))
def test_a_festival_clip_does_not_depend_on_what_the_process_spoke_before(tmp_path: Path, voice: str) -> None:
    """The same seed gives the same bytes: a clip is the same spoken first or after others (the Czech voices
    randomise their prosody from festival's own generator unless told not to)."""
    from examples.digits.speech import Utterance, speak_festival

    alone = Utterance(voice, "seven", 175, None, tmp_path / "alone.wav")
    before = [Utterance(voice, word, 175, None, tmp_path / f"{word}.wav") for word in ("three", "nine")]
    after = Utterance(voice, "seven", 175, None, tmp_path / "after.wav")
    speak_festival([alone])
    speak_festival([*before, after])
    assert alone.path.read_bytes() == after.path.read_bytes()


def test_festival_runs_without_address_randomisation(tmp_path: Path) -> None:
    """festival's diphone synthesis gave other bytes for a clip or two of a batch from one process to the next
    while Linux placed its memory at random; the clips are a seed's only when it runs with that off."""
    from examples.digits.speech import _working_setarch, festival_command

    if _working_setarch() is None:  # a sandbox that refuses the personality change (Docker's default seccomp)
        pytest.skip("setarch -R is refused here: festival runs with address randomisation")
    script, seen = tmp_path / "personality.scm", tmp_path / "personality"
    script.write_text(f'(system "cat /proc/self/personality > {seen}")\n')
    subprocess.run(festival_command(str(script)), check=True, capture_output=True)
    addr_no_randomize = 0x0040000
    assert int(seen.read_text(), 16) & addr_no_randomize


def test_an_unknown_festival_voice_is_refused_by_name(tmp_path: Path) -> None:
    from examples.digits.speech import Utterance, speak_festival

    with pytest.raises(ValueError, match="not_a_voice"):
        speak_festival([Utterance("festival:not_a_voice", "seven", 175, None, tmp_path / "x.wav")])

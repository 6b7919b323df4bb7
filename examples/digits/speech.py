"""The digits example's speech: three synthesisers, and which voices training may hear.

A voice is named as the manifest's `voice` field writes it: an espeak-ng voice by its own name
("en-gb", "nl+f2"), any other engine's as "engine:voice" ("festival:kal_diphone", "flite:awb").

Training hears espeak-ng and festival only. What it never hears, so that a held-out score means
what it says (issue 16):
  held_out_voices   English espeak-ng voices and variants outside the training pool
  held_out_accents  espeak-ng's voices of eight languages (de, es, fr, hi, it, pl, ru, vi) reading
                    the English words; no voice of these languages, in any engine, is in training
  held_out_engine   flite, whose voices are built from recordings of real speakers (CMU ARCTIC
                    awb, rms, slt) that no training voice was made from
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

ESPEAK, FESTIVAL, FLITE = "espeak-ng", "festival", "flite"
TRAINING_ENGINES = (ESPEAK, FESTIVAL)
DEFAULT_WPM = 175  # espeak-ng's default speed: the other engines' duration stretch is DEFAULT_WPM / speed

# --- espeak-ng -----------------------------------------------------------------------------------
TRAIN_ENGLISH: tuple[str, ...] = (
    "en-gb", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-029", "en-us+f2", "en-gb+f4",
)
# Languages whose espeak-ng voice reads the English words with its own letter rules (Latin script) or
# with English rules in its own voice (other scripts): accents training hears. None is one of the
# held-out accents' languages, nor a dialect of one.
TRAIN_ACCENT_LANGUAGES: tuple[str, ...] = (
    "af", "az", "bs", "ca", "cs", "cy", "da", "eo", "et", "eu", "fi", "ga", "gd", "hr", "hu", "id", "is", "lt",
    "lv", "mt", "ms", "nb", "nl", "pt", "pt-br", "ro", "sk", "sl", "sq", "sv", "sw", "tr",
    "bg", "el", "ka", "hy", "ta", "bn", "ne", "mr", "uk", "ur", "kn", "ml", "pa", "si", "gu", "te",
)
# espeak-ng variants (formant sets, pitch and breath of other speakers) training may combine with a voice.
TRAIN_VARIANTS: tuple[str, ...] = (
    "f1", "f2", "f4", "f5", "m1", "m2", "m4", "m5", "m6", "klatt2", "klatt4", "Alex", "Annie", "Mike", "Steph", "Zac",
)
HELD_OUT_VOICES: tuple[str, ...] = (  # English, outside TRAIN_ENGLISH, with variants outside TRAIN_VARIANTS
    "en-us-nyc", "en-gb-x-gbcwmd", "en-us+m3", "en-gb+klatt", "en-us+croak", "en+Andy",
)
HELD_OUT_ACCENTS: tuple[str, ...] = ("de", "es", "fr-fr", "hi", "it", "pl", "ru", "vi")

# --- festival (the second training engine) ----------------------------------------------------------
# Voice -> the Debian package that holds it (Makefile SYSTEM_PACKAGES installs them). Left out: the
# Italian and Russian voices (held-out accents' languages), us_slt (the speaker of flite's slt), and the
# Hindi, Marathi and Telugu voices (festival crashes on Latin text with them).
FESTIVAL_VOICES: dict[str, str] = {
    "kal_diphone": "festvox-kallpc16k",
    "ked_diphone": "festvox-kdlpc16k",
    "suo_fi_lj_diphone": "festvox-suopuhe-lj",
    "hy_fi_mv_diphone": "festvox-suopuhe-mv",
    "czech_dita": "festvox-czech-dita",
    "czech_machac": "festvox-czech-machac",
    "czech_ph": "festvox-czech-ph",
    "upc_ca_ona_hts": "festvox-ca-ona-hts",
}
# Festival voices that speak through HTS (a statistical model of a recorded speaker, spoken by a vocoder) rather
# than by joining recorded diphones: they ignore Duration_Stretch and take the drawn speed as the HTS engine's
# speech rate ("-r", >1 faster). That rate stretches their pauses, not their phones (ona's "seven" at 0.6: phones
# unchanged, the leading pause 0.49 -> 1.25 s), and the pauses are breath noise ~35 dB under the word that the
# clean stage's 40 dB trim keeps: the word starts 0.3-1.2 s into the clip. Cutting clips to their phones lost
# flite points (models.md), so they stay as spoken. ona is the only such voice training may hear (us_slt is flite's slt).
FESTIVAL_HTS_VOICES: frozenset[str] = frozenset({"upc_ca_ona_hts"})
# Festival voices the example can render but training does not hear (benchmarks/robust_speech.py tries them):
# the Czech child voice krb. With it in training, two festival voices held out of training scored 83.6 / 84.3 / 77.7 %
# against 76.3 / 72.9 / 73.1 (robust_speech.py --tune, seeds 0-2), but flite 75.2 / 80.3 / 77.8 % against
# 88.6 / 73.2 / 82.3 (emergent_alignment.py): its gain on festival did not carry to another engine.
FESTIVAL_TRIAL_VOICES: dict[str, str] = {"czech_krb": "festvox-czech-krb"}
# --- flite (held out: never in training) ------------------------------------------------------------
FLITE_VOICES: tuple[str, ...] = ("awb", "rms", "slt")


def engine_of(voice: str) -> str:
    """The synthesiser a voice name belongs to."""
    engine, sep, _ = voice.partition(":")
    return engine if sep else ESPEAK


def voice_name(voice: str) -> str:
    """The engine's own name for the voice."""
    return voice.partition(":")[2] or voice


def _espeak_training_voices() -> tuple[str, ...]:
    accents = tuple(TRAIN_ACCENT_LANGUAGES)
    varied = tuple(f"{lang}+{TRAIN_VARIANTS[i % len(TRAIN_VARIANTS)]}" for i, lang in enumerate((*TRAIN_ENGLISH[:6], *accents)))
    return (*TRAIN_ENGLISH, *accents, *varied)


ESPEAK_TRAINING_VOICES: tuple[str, ...] = _espeak_training_voices()
FESTIVAL_TRAINING_VOICES: tuple[str, ...] = tuple(f"{FESTIVAL}:{v}" for v in FESTIVAL_VOICES)
HELD_OUT_ENGINE_VOICES: tuple[str, ...] = tuple(f"{FLITE}:{v}" for v in FLITE_VOICES)


@dataclass(frozen=True)
class Utterance:
    """One clip to speak: `word` by `voice` at `speed` (words per minute) and `pitch` (espeak-ng 0..99;
    None: the voice's own), written as a WAV at `path`."""

    voice: str
    word: str
    speed: int
    pitch: int | None
    path: Path


def required_programs(voices: Iterable[str]) -> list[str]:
    """The synthesiser programs `voices` need that are not on PATH."""
    return sorted({engine_of(v) for v in voices if shutil.which(engine_of(v)) is None})


def speak(utterance: Utterance) -> None:
    """Write one clip with espeak-ng or flite (one process each; both start in milliseconds)."""
    engine, name = engine_of(utterance.voice), voice_name(utterance.voice)
    if engine == ESPEAK:
        pitch = [] if utterance.pitch is None else ["-p", str(utterance.pitch)]
        command = ["espeak-ng", "-w", str(utterance.path), "-v", name, "-s", str(utterance.speed), *pitch, utterance.word]
    elif engine == FLITE:
        command = ["flite", "-voice", name, "--setf", f"duration_stretch={DEFAULT_WPM / utterance.speed:.3f}",
                   "-o", str(utterance.path), "-t", utterance.word]
    else:
        raise ValueError(f"speak() renders espeak-ng and flite voices; {utterance.voice!r} is a {engine} voice "
                         "(speak_festival renders those, in one process)")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not utterance.path.exists():
        raise RuntimeError(f"{engine} failed for voice {utterance.voice!r} (exit {result.returncode}): "
                           f"{result.stderr.strip()[-300:]}")


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def festival_command(script: str) -> list[str]:
    """festival running `script`, with the address space laid out alike each time (`setarch -R`, util-linux).

    With Linux's address randomisation on, a festival batch of 600 clips came out with one or two clips different
    between processes (a ked_diphone and a czech_machac clip of one seed in four variants over nine runs, same
    script); with it off, 12 runs of three environments gave the same bytes. Festival's diphone synthesis reads
    memory whose contents follow where things were placed; setarch makes that the same every time, so a seed
    gives the same clips. Where that cannot be had (no setarch, or a sandbox that refuses the change: Docker's
    default seccomp profile does) festival runs as it is, and may vary so."""
    setarch = _working_setarch()
    return [*([setarch, "-R"] if setarch else []), "festival", "-b", script]


@lru_cache(maxsize=1)
def _working_setarch() -> str | None:
    """setarch's path if it can turn address randomisation off here, else None (asked once per process)."""
    setarch = shutil.which("setarch")
    if setarch is None:
        return None
    probe = subprocess.run([setarch, "-R", "true"], capture_output=True, check=False)
    return setarch if probe.returncode == 0 else None


def speak_festival(utterances: list[Utterance]) -> None:
    """Write festival clips with one festival process for them all: festival takes a third of a second to
    start, then milliseconds per voice loaded and per clip (one process per voice cost 5x as much)."""
    by_voice: dict[str, list[Utterance]] = {}
    for utterance in utterances:
        by_voice.setdefault(voice_name(utterance.voice), []).append(utterance)
    known = {**FESTIVAL_VOICES, **FESTIVAL_TRIAL_VOICES}
    unknown = sorted(set(by_voice) - set(known))
    if unknown:
        raise ValueError(f"festival voices {unknown} are not ones the example uses; known: {sorted(known)}")
    if not by_voice:
        return
    lines = []
    for name, group in by_voice.items():
        lines.append(f"(voice_{name})")
        if name.startswith("czech_"):  # its prosody draws from festival's own generator: clips would depend on
            lines.append("(set! czech-randomize nil)")  # what the process spoke before; variety is our seeded speed
        for u in group:
            if name in FESTIVAL_HTS_VOICES:
                lines.append(f"(set! hts_engine_params (append {name}::hts_engine_params "
                             f"(list (list \"-r\" {u.speed / DEFAULT_WPM:.3f}))))")
            else:
                lines.append(f"(Parameter.set 'Duration_Stretch {DEFAULT_WPM / u.speed:.3f})")
            lines.append(f"(utt.save.wave (SynthText {_scheme_string(u.word)}) {_scheme_string(str(u.path))} 'riff)")
    with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    try:
        result = subprocess.run(festival_command(script.name), capture_output=True, text=True, check=False)
    finally:
        Path(script.name).unlink(missing_ok=True)
    missing = {name: [u for u in group if not u.path.exists()] for name, group in by_voice.items()}
    missing = {name: group for name, group in missing.items() if group}
    if result.returncode != 0 or missing:
        packages = sorted({known[name] for name in missing or by_voice})
        raise RuntimeError(
            f"festival failed (exit {result.returncode}; {sum(map(len, missing.values()))} clips not written, voices "
            f"{sorted(missing)}): {(result.stderr or result.stdout).strip()[-300:]}; are Debian's {', '.join(packages)} "
            "installed (`make system-deps`)?")

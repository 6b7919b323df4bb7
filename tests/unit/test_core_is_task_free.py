"""The core is a framework, not the digits demo: no demo words in its code, and no import of an example.

The task (classes, prompts, golden batch, slices, languages, channels) is data in params.yaml; a
digit, a voice or ten classes named in flows/, features/, models/ or monitoring/ is the demo leaking
back into the core, whether in code, a comment or a docstring.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[2]
CORE = ("flows", "features", "models", "monitoring")
DEMO_WORDS: dict[str, re.Pattern[str]] = {
    "handwritten": re.compile(r"handwritten", re.I),
    "digit": re.compile(r"\bdigits?\b", re.I),
    "voice": re.compile(r"\bvoices?\b", re.I),
    "ten classes": re.compile(r"range\(10\)"),
    "N_CLASSES": re.compile(r"\bN_CLASSES\b"),
    "NUM_DIGITS": re.compile(r"\bNUM_DIGITS\b"),
    "DIGIT_PROMPTS": re.compile(r"\bDIGIT_PROMPTS\b"),
    "the demo generator": re.compile(r"\bgenerate_demo_batch\b"),
    "the digits example": re.compile(r"\bexamples\.digits\b"),
}
# Where a demo word means something else: "six significant digits" is about numbers, not the demo.
NOT_THE_DEMO = re.compile(r"significant digits", re.I)


def demo_words_in(path: Path, root: Path = PROJECT) -> list[str]:
    """`file:line: [word] text` (the file relative to `root`) for each line of `path` naming a demo word."""
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        text = NOT_THE_DEMO.sub("", line)
        for word, pattern in DEMO_WORDS.items():
            if pattern.search(text):
                found.append(f"{path.relative_to(root)}:{number}: [{word}] {line.strip()[:120]}")
    return found


def test_the_scan_finds_a_demo_word_where_there_is_one(tmp_path):
    probe = tmp_path / "flows" / "probe.py"
    probe.parent.mkdir()
    probe.write_text('"""Scores the ten digits."""\nVOICES = ["en-gb"]\nfor k in range(10):\n    pass\n'
                     'ROUND = 6  # significant digits in a report\n')
    found = demo_words_in(probe, root=tmp_path)
    assert [line.split(": [")[1].split("]")[0] for line in found] == ["digit", "voice", "ten classes"]
    assert found[0].startswith("flows/probe.py:1:")


def test_the_core_names_no_demo_word():
    found = [line for package in CORE for path in sorted((PROJECT / package).rglob("*.py"))
             for line in demo_words_in(path)]
    assert not found, f"{len(found)} line(s) of the core name the digits demo:\n" + "\n".join(found)


def test_the_import_contracts_hold():
    """pyproject's import-linter contracts: the core never imports an example project, prefect stays in flows/,
    the pure packages never import the orchestration layer."""
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=PROJECT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "the core never imports an example project KEPT" in result.stdout

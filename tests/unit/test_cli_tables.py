"""Tables fit the terminal (flows/cli_tables.py): `flywheel models`, the gate table, the run summary and the
monitor table at 80 and 140 columns, every line within the width and every header broken only between words (rich alone folded
`audio_to_image_r1` into `audio_to_ima` / `ge_r1` at 140)."""

from __future__ import annotations

import io

import pytest
from rich.cells import cell_len
from rich.console import Console

from flows.cli_models import VERSION_COLUMNS, gate_table, versions_table
from flows.cli_monitor import monitor_table
from flows.cli_report import summary_tables
from flows.cli_tables import Col, FittedTable, fit_columns, header_lines
from models.registry import VersionSummary
from tests.unit.test_cli_class_names import DECISION

WIDTHS = (80, 140)
MD5 = "0123456789abcdef0123456789abcdef"


def versions() -> list[VersionSummary]:
    tags = {"gate.passed": "true", "gate.champion_version": "1", "gate.slices": "14/14 slice checks passed",
            "gate.metric.zero_shot_image_acc": "0.9743", "gate.metric.zero_shot_audio_acc": "0.9391",
            "gate.metric.audio_to_image_r1": "0.9120", "gate.metric.p95_latency_ms": "12.3456",
            "gate.metric.model_size_mb": "4.5123", "data_version": f"lake/inputs@{MD5}"}
    rejected = {**tags, "gate.passed": "false", "gate.slices": "13/14 slice checks passed",
                "gate.check.zero_shot_image_acc.class_7.min": "FAIL 0.61 < 0.70"}
    return [VersionSummary("3", ("challenger",), "2026-12-05T18:00:00+00:00", rejected),
            VersionSummary("2", ("champion", "previous"), "2026-12-04T18:00:00+00:00", tags),
            VersionSummary("1", (), "2026-12-03T18:00:00+00:00", {**tags, "gate.champion_version": "None"})]


def run_summary() -> dict:
    stages = {"ingest": {"rows_in": 1200, "rows_out": 1188, "rows_quarantined": 12,
                         "reasons": {"missing_file": 7, "unreadable_audio": 3, "duplicate_sample_id": 2}},
              "clean": {"rows_in": 1188, "rows_out": 1150, "rows_quarantined": 38,
                        "reasons": {"image_too_dark": 20, "audio_silent": 11, "caption_language_unknown": 7}},
              "validate": {"rows_in": 1150, "rows_out": 1150, "rows_quarantined": 0}}
    return {"run_id": "20261205T180000-1a2b3c", "status": "succeeded", "batch_id": "batch-002", "stages": stages,
            "seconds": {"ingest": 1.2, "clean": 14.1, "validate": 0.9, "train": 41.5, "register": 2.1, "gate": 6.3},
            "cache": {"clean": {"cached": True}},
            "train": {"rows": 2300, "labelled_rows": 2100, "training_batches": ["batch-001", "batch-002"], "seconds": 41.5,
                      "metrics": {"zero_shot_image_acc": 0.974, "zero_shot_audio_acc": 0.939, "audio_to_image_r1": 0.912}},
            "model": {"name": "digits-imagebind", "version": "3", "champion": "3"},
            "gate": {"passed": True, "reason": "every check passed", "lineage": {"champion_version": "2"}}}


def render(renderable, width: int) -> list[str]:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    with console.capture() as captured:
        console.print(renderable)
    return captured.get().splitlines()


def shown_headers(lines: list[str]) -> list[str]:
    """Each column's header as printed, its lines joined back: without a space after an underscore (a snake_case
    name broken there), with one otherwise. A header folded mid-word comes back with a space inside a word."""
    top = next(i for i, line in enumerate(lines) if line.startswith("┏"))
    rule = next(i for i, line in enumerate(lines) if line.startswith("┡"))
    rows = [line.strip().strip("┃").split("┃") for line in lines[top + 1:rule]]
    headers = []
    for column in zip(*rows):
        joined = ""
        for fragment in (cell.strip() for cell in column):
            if fragment:
                joined = f"{joined}{'' if not joined or joined.endswith('_') else ' '}{fragment}"
        headers.append(joined)
    return headers


def left_out(lines: list[str]) -> str:
    bottom = next(i for i, line in enumerate(lines) if line.startswith("└"))
    return " ".join(line.strip() for line in lines[bottom + 1:])


def check_fits(table: FittedTable, width: int) -> list[str]:
    """Print `table` at `width`: every line fits, no header is split mid-word, a column not shown is named
    under the table; the headers shown, in order."""
    lines = render(table, width)
    assert max(cell_len(line) for line in lines) <= width, "\n".join(lines)
    headers = shown_headers(lines)
    everything = [c.header for c in table.columns]
    assert headers == [h for h in everything if h in headers], "\n".join(lines)  # whole, in their order
    missing = [h for h in everything if h not in headers]
    if missing:
        assert left_out(lines).startswith(f"not shown at {width} columns: {', '.join(missing)}"), "\n".join(lines)
    return headers


@pytest.mark.parametrize("width", WIDTHS)
def test_flywheel_models_fits_the_terminal_with_whole_headers(width):
    headers = check_fits(versions_table(versions(), "digits-imagebind", ()), width)
    if width == 140:
        assert headers == [c.header for c in VERSION_COLUMNS]  # every column, `audio_to_image_r1` whole
    else:  # the least useful go first; the gate verdict, the metrics and the failed slices stay
        assert headers[:6] == ["version", "aliases", "gate", "image_acc", "audio_acc", "audio_to_image_r1"]
        assert "slices" in headers and "created (UTC)" not in headers and "data version" not in headers
    text = "\n".join(render(versions_table(versions(), "digits-imagebind", ()), width))
    assert "@challenger" in text and "class=7" in text  # a word in a folding column stays whole when it can


@pytest.mark.parametrize("width", WIDTHS)
def test_the_gate_table_fits_the_terminal_with_every_column(width):
    assert check_fits(gate_table(DECISION), width) == ["check", "observed", "bound", "interval", "result"]
    assert "-0.4000 … -0.1000" in "\n".join(render(gate_table(DECISION), width))  # an interval is never folded


@pytest.mark.parametrize("width", WIDTHS)
def test_the_run_summary_tables_fit_the_terminal_with_every_column(width):
    data, model = summary_tables(run_summary())
    assert check_fits(data, width) == ["stage", "rows in", "rows out", "quarantined", "reasons", "seconds"]
    assert check_fits(model, width) == ["stage", "result", "seconds"]
    assert "(cached)" in "\n".join(render(data, width))


@pytest.mark.parametrize("width", WIDTHS)
def test_the_monitor_table_fits_the_terminal_with_every_column(width):
    summary = {"status": "drift", "champion": "2", "checks": {
        "data_drift": {"status": "drift", "items": {
            "img_ink_ratio": {"score": 0.31, "threshold": 0.1, "drifted": True},
            "audio_spectral_centroid_hz": {"score": 0.22, "threshold": 0.1, "drifted": True},
            "caption_chars": {"score": 0.02, "threshold": 0.1, "drifted": False}}},
        "not_applicable": {"status": "skipped", "items": {"depth": "the champion has no depth tower"}}}}
    assert check_fits(monitor_table(summary), width) == ["check", "status", "drifted", "evidence"]


def test_a_header_breaks_after_an_underscore_or_at_a_space_never_inside_a_word():
    assert header_lines("audio_to_image_r1", 9) == ["audio_to_", "image_r1"]
    assert header_lines("audio_to_image_r1", 6) == ["audio_", "to_", "image_", "r1"]
    assert header_lines("data version", 8) == ["data", "version"]
    assert header_lines("quarantined", 4) == ["quarantined"]  # too long for the width: whole, on its own line


def test_columns_are_left_out_lowest_keep_first_and_the_rest_fill_the_width():
    columns = [Col("name", keep=3), Col("a_long_number", keep=1), Col("notes", fold=True, keep=2)]
    rows = [["alpha", "123456789012", "a note that is long enough to fold over a few lines"]]
    widths, dropped = fit_columns(columns, rows, 40)
    assert dropped == [] and sum(widths.values()) + 3 * 3 + 1 == 40
    widths, dropped = fit_columns(columns, rows, 30)
    assert dropped == [1] and sorted(widths) == [0, 2]  # the number goes first; name and notes stay

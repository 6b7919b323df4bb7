"""A model version's card: the Markdown the registry shows on the version page, and its training run's note.

Pure functions of what the gate decided (`models.gate.GateDecision.to_dict()`), the version's lineage
(its registration tags and the decision's lineage) and the plot artifacts of its training run; the
caller writes the text (`Registry.describe_version`). The same inputs give the same text, so writing
it again after a re-run of the gate changes nothing.

The card reads top-down: the verdict, and for a rejected version why (its failing checks) first;
then every headline check with its interval, the golden-set metrics (whole set and per slice, with
the change against the champion and its interval), the training window and data versions, the
plots, and the rest of the lineage. A registry keeps at most `CARD_MAX_CHARS` characters of a
description (MLflow's SQL stores: VARCHAR(5000)), so on a large task the per-slice table and the
lineage lose rows, failing ones last, and say how many were left out and where all of them are
(the decision's JSON artifact on the training run).

Links are relative to the MLflow UI's address (`#/models/…`, `get-artifact?…`): they work on the
UI whatever host or static prefix serves it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from models.gate import NOT_APPLICABLE, Check

# The training run's artifact folder of figures (models.tracking logs them; the card links them). Here, not in
# models.tracking: the register and gate stages write cards without importing the plotting libraries.
PLOTS_DIR = "plots"

CARD_MAX_CHARS = 5000  # MLflow's SQL stores keep a model version's description in a VARCHAR(5000)
NOTE_MAX_CHARS = 5000  # a run tag holds 8000; the note stays a summary that points at the card
WINDOW_SHOWN = 12  # training batches named on the card; the rest are counted (all are in `training_batches`)
# Registry bookkeeping, not lineage: the gate's tags (the card says it all), `lineage.*` copies of the
# decision's lineage, promotion and rollback records, MLflow's own.
NOT_LINEAGE = ("gate.", "lineage.", "promotion.", "rollback.", "mlflow.")
# Lineage keys the card shows in their own lines; every other key goes to the "More lineage" table.
SHOWN_KEYS = ("family", "training_run", "flow_run", "training_batches", "data_version", "golden_version",
              "golden_rows", "challenger_version", "champion_version", "champion_after", "decision_artifact",
              "gate_flow_run", "prefect_flow_run", "data_docs_page")


def version_page(model_name: str, version: str) -> str:
    """The MLflow UI's page of a model version, relative to the UI's address."""
    return f"#/models/{quote(model_name, safe='')}/versions/{quote(str(version), safe='')}"


def run_page(experiment_id: str, run_id: str) -> str:
    """The MLflow UI's page of a run, relative to the UI's address."""
    return f"#/experiments/{quote(str(experiment_id), safe='')}/runs/{quote(run_id, safe='')}"


def artifact_url(run_id: str, path: str) -> str:
    """A run artifact as the MLflow server serves it (`/get-artifact`, the URL its own UI fetches)."""
    return "get-artifact?" + urlencode({"path": path, "run_uuid": run_id})


def card_lineage(version_tags: Mapping[str, str], decision: Mapping[str, Any] | None) -> dict[str, str]:
    """What the version was made from: its registration tags (training window, data versions, flow
    run, …) without the registry's bookkeeping, overlaid with the gate decision's lineage."""
    lineage = {k: str(v) for k, v in sorted(version_tags.items()) if not k.startswith(NOT_LINEAGE)}
    if decision is not None:
        lineage.update({k: str(v) for k, v in decision.get("lineage", {}).items() if v is not None})
    return lineage


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _number(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _interval(check: Mapping[str, Any]) -> str:
    interval = check.get("interval")
    return f"{interval[0]:+.4f} … {interval[1]:+.4f}" if interval else ""


def _result(passed: bool) -> str:
    return "pass" if passed else "**FAIL**"


def _check(check: Mapping[str, Any]) -> Check:
    fields = {k: check[k] for k in Check.__dataclass_fields__ if k in check}
    return Check(**fields)


@dataclass
class _Table:
    """A Markdown table whose trailing rows may be dropped to fit the card; it then says how many."""

    title: str
    header: tuple[str, ...]
    rows: list[tuple[str, ...]]
    where_all_are: str  # what the "… N more rows" line points at
    dropped: int = 0
    notes: list[str] = field(default_factory=list)  # lines under the table

    def lines(self) -> list[str]:
        if not self.rows and not self.dropped:
            return []
        out = [f"## {self.title}", ""]
        if self.rows:  # every row dropped: the note alone, not an empty table
            out += ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
            out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in self.rows]
        if self.dropped:
            more = "more rows" if self.rows else "rows"
            out += [""] * bool(self.rows) + [f"… {self.dropped} {more}, left out to fit the registry's {CARD_MAX_CHARS} "
                                             f"characters: {self.where_all_are}"]
        return out + ([""] + self.notes if self.notes else []) + [""]


def _verdict(model_name: str, version: str, decision: Mapping[str, Any] | None, lineage: Mapping[str, str]) -> list[str]:
    title = f"# {model_name} v{version}"
    if decision is None:
        return [title, "", "**NOT GATED YET**: the gate has not judged this version; it writes this card when it does.", ""]
    champion = lineage.get("champion_version")
    against = f"`@champion` v{champion}" if champion else "no champion (first model: value bounds only)"
    rows = f" ({lineage['golden_rows']} rows)" if lineage.get("golden_rows") else ""
    verdict = "PASSED" if decision.get("passed") else "REJECTED"
    lines = [title, "", f"**{verdict}** by the gate against {against} on golden set "
                        f"`{lineage.get('golden_version', '?')}`{rows}."]
    after = lineage.get("champion_after")
    if decision.get("passed"):
        lines.append("Promoted: the gate made this version `@champion`." if after == str(version) else
                     f"Not promoted: `@champion` was v{after} after the gate." if after else "Not promoted yet.")
    lines.append("")
    failed = [_check(c) for c in decision.get("checks", []) if not c["passed"]]
    if failed:
        lines += ["## Why it was rejected", ""] + [f"- {c.explain()}" for c in failed] + [""]
    not_applicable = [_check(c).explain() for c in decision.get("checks", []) if c["kind"] == NOT_APPLICABLE]
    if not_applicable:
        lines += ["Not judged: " + "; ".join(not_applicable), ""]
    return lines


def _headline_checks(decision: Mapping[str, Any]) -> list[str]:
    checks = [c for c in decision.get("checks", []) if not c.get("slice") and c["kind"] != NOT_APPLICABLE]
    if not checks:
        return []
    lines = ["## Gate checks", "", "| metric | check | observed | bound | interval | result |", "|---|---|---|---|---|---|"]
    for c in checks:
        signed = c["kind"].startswith("change")
        lines.append(f"| {_cell(c['metric'])} | {c['kind']} | {_number(c['observed'], signed)} | "
                     f"{_number(c['bound'], signed)} | {_interval(c)} | {_result(c['passed'])} |")
    lines.append("")
    lines.append("Value checks (min, max) hold the version's point value on the golden set to the bound: they have "
                 "no interval. Change checks compare with the champion on the same golden rows: positive is better; "
                 "the interval is the paired bootstrap's, and its lower end must clear the bound.")
    return lines + [""]


def _headline_metrics(decision: Mapping[str, Any], champion_version: str | None) -> list[str]:
    challenger, champion = decision.get("challenger") or {}, decision.get("champion") or {}
    if not challenger:
        return []
    versus = f" champion v{champion_version} |" if champion else ""
    lines = ["## Golden-set metrics", "", f"| metric | this version |{versus}", "|---|---|" + ("---|" if champion else "")]
    for metric, value in sorted(challenger.items()):
        lines.append(f"| {_cell(metric)} | {_number(value)} |" + (f" {_number(champion.get(metric))} |" if champion else ""))
    return lines + [""]


def _slice_table(decision: Mapping[str, Any], where_all_are: str) -> _Table:
    """One row per judged (slice, metric): the version's value, the champion's, the change with its
    interval, and whether every check of it passed; failing rows first, so they are the last dropped."""
    by_key: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for c in decision.get("checks", []):
        if c.get("slice") and c["kind"] != NOT_APPLICABLE:
            by_key.setdefault((c["slice"], c["metric"]), []).append(c)
    values = decision.get("slice_metrics") or {}
    rows: list[tuple[bool, tuple[str, ...]]] = []
    for (slice_, metric), checks in sorted(by_key.items()):
        value = values.get(slice_, {}).get(metric)
        if value is None:  # a decision recorded before slice_metrics: its value checks carry the value
            value = next((c["observed"] for c in checks if c["kind"] in ("min", "max")), None)
        change = next((c for c in checks if c["kind"] == "change"), None) or next(
            (c for c in checks if c["kind"] == "change_rel"), None)
        champion = change.get("champion") if change else None
        delta = "" if change is None else (f"{_number(change['observed'], True)}"
                                           f"{' rel' if change['kind'] == 'change_rel' else ''}"
                                           f"{f' ({_interval(change)})' if change.get('interval') else ''}")
        passed = all(c["passed"] for c in checks)
        failed = ", ".join(c["kind"] for c in checks if not c["passed"])
        rows.append((passed, (slice_, metric, _number(value), _number(champion), delta,
                              _result(passed) + (f" ({failed})" if failed else ""))))
    rows.sort(key=lambda r: r[0])  # stable: failing first, each group in slice order
    notes = []
    if decision.get("skipped_slices"):
        notes.append("Too few golden rows to judge: " + ", ".join(decision["skipped_slices"]))
    return _Table("Golden-set metrics per slice", ("slice", "metric", "this version", "champion", "change (interval)",
                                                   "result"), [r for _, r in rows], where_all_are, notes=notes)


def _data_versions(lineage: Mapping[str, str]) -> dict[str, str]:
    """Lake versions by name (`data.inputs` → inputs); `data_version`, the older tag of the inputs' version,
    only when no `data.*` tag holds it."""
    versions = {k.removeprefix("data."): v for k, v in lineage.items() if k.startswith("data.")}
    if lineage.get("data_version") and lineage["data_version"] not in versions.values():
        versions["data_version"] = lineage["data_version"]
    return versions


def _training(lineage: Mapping[str, str], run_link: str | None) -> list[str]:
    lines = ["## Training", ""]
    if lineage.get("family"):
        lines.append(f"- family: `{lineage['family']}`")
    if lineage.get("training_run"):
        run = f"[`{lineage['training_run']}`]({run_link})" if run_link else f"`{lineage['training_run']}`"
        lines.append(f"- MLflow training run: {run}")
    if lineage.get("flow_run"):
        flow = f" ([Prefect flow run]({lineage['prefect_flow_run']}))" if lineage.get("prefect_flow_run") else ""
        lines.append(f"- flywheel run: `{lineage['flow_run']}`{flow}; `flywheel lineage {lineage['flow_run']}` "
                     "prints its whole chain")
    if lineage.get("data_docs_page"):
        lines.append(f"- GX validation of its batch (Data Docs page): `{lineage['data_docs_page']}`")
    batches = [b for b in lineage.get("training_batches", "").split(",") if b]
    if batches:
        shown = ", ".join(f"`{b}`" for b in batches[:WINDOW_SHOWN])
        more = f" and {len(batches) - WINDOW_SHOWN} more (tag `training_batches`)" if len(batches) > WINDOW_SHOWN else ""
        lines.append(f"- training window: {len(batches)} batches: {shown}{more}")
    lines += [f"- data version {name}: `{value}`" for name, value in _data_versions(lineage).items()]
    if lineage.get("golden_version"):
        lines.append(f"- golden set: `{lineage['golden_version']}`")
    if lineage.get("decision_artifact"):
        lines.append(f"- the whole decision: `{lineage['decision_artifact']}` on the training run")
    return lines + [""] if len(lines) > 2 else []


def _plots(plots: Sequence[str], run_id: str | None) -> list[str]:
    if not plots or run_id is None:
        return []
    lines = ["## Plots", ""]
    for path in plots:
        name = path.rsplit("/", 1)[-1]
        lines.append(f"![{name}]({artifact_url(run_id, path)})" if name.endswith((".png", ".jpg", ".jpeg", ".svg"))
                     else f"[{name}]({artifact_url(run_id, path)})")
        lines.append(f"`{path}`")
        lines.append("")
    return lines


def render_model_card(model_name: str, version: str, lineage: Mapping[str, str],
                      decision: Mapping[str, Any] | None = None, plots: Sequence[str] = (),
                      run_link: str | None = None) -> str:
    """The version's card as Markdown, at most CARD_MAX_CHARS characters.

    `lineage`: `card_lineage(version tags, decision)`; `decision`: the gate's `to_dict()` (None: not gated
    yet); `plots`: artifact paths on the training run (`plots/confusion_image.png`); `run_link`: the run's
    page (`run_page`)."""
    where = (f"`{lineage['decision_artifact']}` on the training run" if lineage.get("decision_artifact")
             else "the version's tags")
    head = _verdict(model_name, str(version), decision, lineage)
    checks = _headline_checks(decision) if decision else []
    metrics = _headline_metrics(decision, lineage.get("champion_version")) if decision else []
    slices = _slice_table(decision, where) if decision else _Table("", (), [], where)
    training, plot_lines = _training(lineage, run_link), _plots(plots, lineage.get("training_run"))
    extra = _Table("More lineage", ("key", "value"),
                   [(k, f"`{v[:200]}`") for k, v in lineage.items()
                    if k not in SHOWN_KEYS and not k.startswith("data.")], "the version's tags")

    def render() -> str:
        return "\n".join(head + checks + metrics + slices.lines() + training + plot_lines + extra.lines()).rstrip() + "\n"

    card = render()
    for table in (extra, slices):  # the lineage table goes first: the slices are what the gate judged
        while len(card) > CARD_MAX_CHARS and table.rows:
            table.rows.pop()
            table.dropped += 1
            card = render()
    if len(card) > CARD_MAX_CHARS:  # only huge headline tables or lineage values get here
        cut = f"\n\n… cut to the registry's {CARD_MAX_CHARS} characters; the whole decision: {where}\n"
        card = card[: CARD_MAX_CHARS - len(cut)] + cut
    return card


def render_run_note(model_name: str, version: str, lineage: Mapping[str, str],
                    decision: Mapping[str, Any] | None = None) -> str:
    """The training run's description (`mlflow.note.content`): which flywheel run and family made it, the
    version it became (linked) and the gate's verdict in its first lines (the UI folds the rest), then the
    data versions, the training window and the gate's reason."""
    verdict = "not run yet" if decision is None else "**passed**" if decision.get("passed") else "**rejected**"
    lines = [f"Trained by flywheel run `{lineage.get('flow_run', '?')}`, family `{lineage.get('family', '?')}`; "
             f"registered as [{model_name} v{version}]({version_page(model_name, version)}), whose description is "
             f"its model card. Gate: {verdict}.", ""]
    lines += [f"- data version {name}: `{value}`" for name, value in _data_versions(lineage).items()]
    batches = [b for b in lineage.get("training_batches", "").split(",") if b]
    if batches:
        lines.append(f"- training window: {len(batches)} batches, `{batches[0]}` … `{batches[-1]}`")
    if lineage.get("golden_version"):
        lines.append(f"- golden set: `{lineage['golden_version']}`")
    if decision is not None:
        lines += ["", f"The gate's reason: {str(decision.get('reason', ''))[:1000]}"]
    note = "\n".join(lines) + "\n"
    return note if len(note) <= NOTE_MAX_CHARS else note[: NOTE_MAX_CHARS - 2] + "…\n"

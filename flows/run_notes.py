"""Each stage's row in the run summary's model table (`flywheel run`, `flywheel summary`), from the summary dict.

The stage table (`flows/stages.py`) names these as each stage's `summary`.
"""

from __future__ import annotations


def train_note(summary: dict) -> str:
    train = summary["train"]
    metrics = ", ".join(f"{k}={v:.3f}" for k, v in train.get("metrics", {}).items() if not k.startswith("n_"))
    return (f"{train.get('rows', 0)} rows ({train.get('labelled_rows', 0)} labelled) from "
            f"{len(train.get('training_batches', []))} batch(es) in {train.get('seconds', 0):.0f} s; golden set: {metrics}")


def gate_note(summary: dict) -> str:
    gate, model = summary["gate"], summary["model"]
    if not gate:
        return ""
    before = (gate.get("lineage") or {}).get("champion_version")
    against = f"champion v{before}" if before else "value thresholds (no champion yet)"
    verdict = "PASSED" if gate.get("passed") else "REJECTED"
    return f"{verdict} against {against}: {gate.get('reason', '')}; @champion is now " + (f"v{model['champion']}" if model.get('champion') else "unset")


def monitor_note(summary: dict) -> str:
    monitor = summary["monitor"]
    if monitor.get("status") == "no_champion":
        return "no champion yet: nothing to compare against"
    if monitor.get("status") == "failed":
        return f"[red]failed[/red]: {monitor.get('error')}"
    if "drifted_share" not in monitor:
        return f"{monitor.get('status')} ({monitor.get('detail', '')})"
    drifted = monitor.get("drifted_columns") or ""
    return (f"{monitor['status']}: drifted share {monitor['drifted_share']:.2f} {drifted} "
            f"vs batches {monitor.get('reference_batches')}; report {monitor.get('report')}")


def register_note(summary: dict) -> str:
    return f"{summary['model'].get('name')} version {summary['model'].get('version')} @challenger"

"""The model card on the registry: a version's description and its training run's note, written when
the version is registered (not gated yet) and again when the gate decides (models/model_card.py)."""

from __future__ import annotations

from typing import Any

from features.transient import call_with_retries
from flows.run_links import note_with_links
from flows.settings import Settings
from flows.stage_config import registry_for


def run_pages(settings: Settings, run_id: str | None) -> dict[str, str]:
    """The pages of the flywheel run that trained the version, from its summary (written as the run goes, so
    the gate finds them): its Prefect flow run and its validation's Data Docs page; {} for none."""
    import json

    path = settings.paths.runs / str(run_id) / "summary.json"
    if not run_id or not path.is_file():
        return {}
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    validate = (summary.get("stages") or {}).get("validate") or {}
    pages = {"prefect_flow_run": (summary.get("links") or {}).get("prefect_flow_run"),
             "data_docs_page": validate.get("data_docs_page")}
    return {key: str(value) for key, value in pages.items() if value}


def write_model_card(settings: Settings, version: str, decision: dict[str, Any] | None = None) -> str:
    """Render and write `version`'s card from its tags, the gate's `decision` (None: not gated yet) and
    the plots its training run logged; returns the card. The same inputs write the same text."""
    from models.model_card import PLOTS_DIR, card_lineage, render_model_card, render_run_note, run_page

    registry = registry_for(settings)
    client = registry.client()
    mv = call_with_retries("read the model version", client.get_model_version, registry.model_name, version)
    lineage = card_lineage(mv.tags, decision)
    lineage.setdefault("training_run", mv.run_id)
    lineage.update(run_pages(settings, lineage.get("flow_run")))
    artifacts = call_with_retries("list the run's plots", client.list_artifacts, mv.run_id, PLOTS_DIR)
    plots = sorted(a.path for a in artifacts if not a.is_dir)
    run = call_with_retries("read the training run", client.get_run, mv.run_id)
    run_link = run_page(run.info.experiment_id, mv.run_id)
    card = render_model_card(registry.model_name, str(version), lineage, decision, plots, run_link)
    note = render_run_note(registry.model_name, str(version), lineage, decision)
    # A card rewritten after the run ended (a resumed gate) keeps the links to the other UIs its run's tags hold.
    registry.describe_version(str(version), card, note_with_links(note, run.data.tags))
    return card

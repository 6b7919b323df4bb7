"""params.yaml as text: the effective params, or the code's defaults alone, each entry with its comment.

The defaults and their one-line reasons are declared once, on the pydantic models in flows/settings.py;
`flywheel params`, `flywheel init` and docs/reference/defaults.md are all written from them, so a
project's params.yaml holds only what it sets.
"""

from __future__ import annotations

import inspect
import io
import re
import tokenize
from typing import Any

import yaml
from pydantic import BaseModel

from flows.settings import Params

# One line above each section; a section missing here gets none.
SECTION_NOTES: dict[str, str] = {
    "task": "what the model learns: the one section without defaults",
    "registry": "the MLflow registered model; null: flywheel-<train.family>",
    "demo": "`flywheel demo-data`: your own generator of landing batches, as module:function (optional)",
    "clean": "decoding limits: audio rate, image and audio size caps, near-duplicate distance",
    "validate": "row and batch expectations; a breach stops the run",
    "transform": "model inputs: image side, log-mel bins, audio frames",
    "label": "your labelling functions (module:function, row -> class name or None) and the label model",
    "train": "the model family (imagebind, lora, a plug-in's name or an import path module:Family) and its training",
    "gate": "a challenger becomes champion only if it passes these on the golden batch; tune them to your task",
    "monitor": "drift of each new batch against the champion's training window",
    "serve": "the model API (`flywheel serve-model`)",
    "alerts": "drift and rejection alerts (Apprise URLs)",
    "retrain": "when drift retrains",
    "schedule": "`flywheel schedule` cron entries",
    "stages": "your own stages (module:function), each run after the stage it names; see docs/reference/stages.md",
}
_FIELD = re.compile(r"\s+(\w+)\s*:")


def _trailing_comment(line: str) -> str | None:
    """The `# ...` comment ending a line of code, found by the tokenizer (a `#` inside a string is not one)."""
    try:
        for token in tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline):
            if token.type == tokenize.COMMENT:
                return token.string.lstrip("#").strip()
    except (tokenize.TokenError, IndentationError):  # a field spread over several lines: no trailing comment read
        return None
    return None


def field_comments(model: type[BaseModel]) -> dict[str, str]:
    """Field name -> the comment beside it in the model's source, else the comment lines just above it."""
    comments: dict[str, str] = {}
    above: list[str] = []
    for line in inspect.getsourcelines(model)[0][1:]:
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = _FIELD.match(line)
        if match and match.group(1) in model.model_fields:
            text = _trailing_comment(line) or " ".join(above)
            if text:
                comments[match.group(1)] = text
        above = []
    return comments


def _flow(value: Any) -> str:
    """One value in YAML flow style, as yaml itself quotes it (so it parses back to the same value)."""
    return yaml.safe_dump(value, default_flow_style=True, width=10_000, allow_unicode=True).removesuffix("\n...\n").strip()


def _with_comment(text: str, comment: str | None) -> str:
    return f"{text}  # {comment}" if comment else text


def _model_lines(model: type[BaseModel], values: dict[str, Any], indent: str) -> list[str]:
    comments = field_comments(model)
    lines: list[str] = []
    for name, field in model.model_fields.items():
        key = field.alias or name
        value, comment = values[key], comments.get(name)
        inner = field.annotation if isinstance(field.annotation, type) else None
        if inner is not None and issubclass(inner, BaseModel):
            lines.append(_with_comment(f"{indent}{key}:", comment))
            lines += _model_lines(inner, value, indent + "  ")
        elif isinstance(value, dict) and value or isinstance(value, list) and any(isinstance(v, dict) for v in value):
            lines.append(_with_comment(f"{indent}{key}:", comment))
            block = yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=10_000).rstrip("\n")
            lines += [f"{indent}  {row}" for row in block.split("\n")]
        else:
            lines.append(_with_comment(f"{indent}{key}: {_flow(value)}", comment))
    return lines


def render_section(name: str, section: BaseModel) -> str:
    """One top-level section as commented YAML."""
    values = section.model_dump(mode="json", by_alias=True)
    note = f"# {SECTION_NOTES[name]}\n" if name in SECTION_NOTES else ""
    return note + "\n".join([f"{name}:", *_model_lines(type(section), values, "  ")]) + "\n"


def default_sections() -> dict[str, BaseModel]:
    """Every section of params.yaml that has defaults (all but `task:`), at its defaults, by its YAML key."""
    return {field.alias or name: field.get_default(call_default_factory=True)
            for name, field in Params.model_fields.items() if name != "task"}


def render_defaults() -> str:
    """Every default of params.yaml, with its comment; the task section (no defaults) is left out."""
    return "\n".join(render_section(key, section) for key, section in default_sections().items())


def render_params(params: Params) -> str:
    """The effective params: the file's values over the defaults, every entry with its comment."""
    return "\n".join(render_section(field.alias or name, getattr(params, name))
                     for name, field in Params.model_fields.items())


def render_defaults_page() -> str:
    """docs/reference/defaults.md: every default with its reason (a test keeps the page current)."""
    return ("# Defaults\n\n"
            "<!-- Generated from flows/settings.py: `python -m flows.params_text > docs/reference/defaults.md`. -->\n\n"
            "Every entry of `params.yaml` but `task:` has a default, declared once in `flows/settings.py` with\n"
            "the reason for its value. A params file holds only what a project changes; `flywheel params\n"
            "--defaults` prints this list, and `flywheel params` the values a params file makes of it.\n\n"
            f"```yaml\n{render_defaults()}```\n")


if __name__ == "__main__":
    print(render_defaults_page(), end="")

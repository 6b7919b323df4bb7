"""Small tasks for the feature pipeline's tests: the digits example's classes and a 3-class RGB task."""

from __future__ import annotations

from features.task import Task, build_prompts

DIGIT_CLASSES = tuple(str(k) for k in range(10))
DIGITS = Task(classes=DIGIT_CLASSES, prompts=build_prompts(DIGIT_CLASSES, "a handwritten digit {label}"),
              slices=("voice",), languages=("en", "de", "fr", "es"), image_channels=1)
SHAPE_CLASSES = ("circle", "square", "triangle")
SHAPES = Task(classes=SHAPE_CLASSES, prompts=build_prompts(SHAPE_CLASSES, "a photo of a {label}"), image_channels=3)


def example_task() -> Task:
    """The digits example's task as `flywheel run` reads it from the root params.yaml (its prompts, golden batch)."""
    from flows.settings import build_task, load_params
    from tests.conftest import PROJECT

    path = PROJECT / "params.yaml"
    return build_task(load_params(path), path)

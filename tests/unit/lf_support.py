"""Labelling functions of a 3-class shapes task, imported by path as a user's would be (test_label_functions)."""

from __future__ import annotations

SHAPE_WORDS = ("circle", "square", "triangle")
NOT_A_FUNCTION = {"circle": 0}


def mentions_shape(row: dict) -> str | None:
    """The shape the caption names, if it names exactly one."""
    named = [w for w in SHAPE_WORDS if w in (row.get("caption") or "").lower()]
    return named[0] if len(named) == 1 else None


def by_camera(row: dict) -> str | None:
    """Reads a manifest field kept in meta: camera 'b' only ever photographs squares."""
    return "square" if row.get("camera") == "b" else None


def says_hexagon(row: dict) -> str | None:
    return "hexagon"


def human(row: dict) -> str | None:
    return None

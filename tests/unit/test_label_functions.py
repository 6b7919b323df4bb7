"""A task's own labelling functions: imported by path at start-up, voting class names that the label
model weighs like the built-in votes; bad paths and bad votes stop with a message naming them."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from features.clean_row import rows_to_frame
from features.label import build_labels, is_built_in_lf_name
from features.label_functions import load_labelling_functions
from tests.unit.params_support import label_params
from tests.unit.task_support import SHAPES

MENTIONS = "tests.unit.lf_support:mentions_shape"
CAMERA = "tests.unit.lf_support:by_camera"


def _rows(captions: list[str | None], labels: list[int | None], cameras: list[str | None]) -> pd.DataFrame:
    """A clean-rows table of the shapes task (labels are class indices, the camera kept in meta)."""
    return rows_to_frame([
        {"sample_id": f"s{i}", "captured_at": pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(seconds=i),
         "caption": caption, "label": label, "meta": json.dumps({} if camera is None else {"camera": camera})}
        for i, (caption, label, camera) in enumerate(zip(captions, labels, cameras))
    ])


def test_a_user_lf_by_import_path_votes_class_indices_that_the_label_model_weighs():
    functions = load_labelling_functions([MENTIONS, CAMERA], is_reserved=is_built_in_lf_name)
    assert [lf.name for lf in functions] == ["mentions_shape", "by_camera"]
    # 8 human-labelled rows where both LFs are right, then unlabelled rows they decide.
    captions = ["a circle", "a red triangle", "a square", "a circle", "a triangle", "a square", "a circle", "a square",
                "a blue circle", "a small triangle", None, "a circle and a square"]
    labels = [0, 2, 1, 0, 2, 1, 0, 1, None, None, None, None]
    cameras = [None, None, "b", None, None, "b", None, "b", None, None, "b", None]
    labels_table, stats = build_labels(_rows(captions, labels, cameras), SHAPES, None, label_params(), functions)

    predicted = labels_table.set_index("sample_id")
    assert predicted.loc["s8", "label"] == 0 and predicted.loc["s9", "label"] == 2  # the caption names it
    assert predicted.loc["s10", "label"] == 1  # no caption: camera b's squares
    assert pd.isna(predicted.loc["s11", "label"])  # two shapes named, no camera: every LF abstains
    assert (predicted.loc[[f"s{i}" for i in range(8)], "label_source"] == "human").all()
    assert json.loads(predicted.loc["s10", "label_votes"]) == {"human": -1, "mentions_shape": -1, "by_camera": 1}
    assert stats.lfs["mentions_shape"].checked == 8 and stats.lfs["by_camera"].checked == 3
    assert stats.lfs["mentions_shape"].accuracy > 0.8  # right on every human row it met


@pytest.mark.parametrize(("path", "message"), [
    ("tests.unit.lf_support.mentions_shape", "not an import path; write 'module.path:function'"),
    ("tests.unit.no_such_module:mentions_shape", "cannot import module 'tests.unit.no_such_module'"),
    ("tests.unit.lf_support:mentions", "has no 'mentions'; its functions: ['by_camera', 'human', 'mentions_shape'"),
    ("tests.unit.lf_support:NOT_A_FUNCTION", "is a dict, not a function"),
    ("tests.unit.lf_support:human", "'human', the name of a built-in vote column"),
])
def test_a_bad_import_path_stops_at_start_up_naming_it(path, message):
    with pytest.raises(ValueError, match="label.functions") as raised:
        load_labelling_functions([path], is_reserved=is_built_in_lf_name)
    assert message in str(raised.value) and repr(path) in str(raised.value)


def test_two_lfs_with_one_name_are_refused():
    with pytest.raises(ValueError, match="both named 'mentions_shape'"):
        load_labelling_functions([MENTIONS, "tests.unit.lf_support : mentions_shape"])


def test_an_lf_voting_a_name_outside_the_classes_is_an_error_naming_it():
    functions = load_labelling_functions(["tests.unit.lf_support:says_hexagon"])
    with pytest.raises(ValueError, match=r"'says_hexagon' .* returned 'hexagon' for sample 's0'.*'circle', 'square', "
                                         r"'triangle'"):
        build_labels(_rows(["x"], [None], [None]), SHAPES, None, label_params(), functions)


def test_the_digits_example_lf_returns_class_names():
    (lf,) = load_labelling_functions(["examples.digits.labelling:caption_digit"])
    assert [lf.fn({"caption": c, "language": l}) for c, l in
            [("the digit seven", "en"), ("un sept", "fr"), ("a scanned digit", "en"), (None, None)]] == ["7", "7", None, None]

"""What a sheet says about itself: dataset, grid and labels from its key and metadata."""

from __future__ import annotations

import json

import pytest

from tessera.errors import InvalidInput
from tessera.sheets.spec import parse_labels_manifest, sheet_id_for, sheet_spec_from


def test_key_convention_labels_every_cell_and_the_file_name_gives_the_grid() -> None:
    spec = sheet_spec_from("incoming/train/digits/7/sheet-3x4.png", "e1", {})
    assert (spec.dataset, spec.rows, spec.cols) == ("digits", 3, 4)
    assert spec.labels == ("7",) * 12


def test_metadata_row_labels_label_each_row_and_win_over_the_key() -> None:
    spec = sheet_spec_from(
        "incoming/train/letters/q/page.png", "e1", {"grid": "2x3", "row-labels": "x,y"}
    )
    assert spec.labels == ("x", "x", "x", "y", "y", "y")
    assert spec.label_at(1, 2) == "y"


def test_one_label_per_cell() -> None:
    spec = sheet_spec_from("incoming/train/d/page.png", "e", {"grid": "1x3", "labels": "a,b,c"})
    assert spec.labels == ("a", "b", "c")


def test_metadata_keys_are_case_insensitive_and_square_is_read() -> None:
    spec = sheet_spec_from("incoming/train/d/5/p.png", "e", {"Grid": "2x2", "Square": "true"})
    assert spec.square and spec.rows == 2


def test_sheet_id_is_deterministic_per_object_and_content() -> None:
    key = "incoming/train/digits/7/sheet-3x4.png"
    assert sheet_id_for(key, "a") == sheet_id_for(key, '"a"')
    assert sheet_id_for(key, "a") != sheet_id_for(key, "b")
    assert sheet_id_for(key, "a") != sheet_id_for("incoming/train/digits/8/sheet-3x4.png", "a")


@pytest.mark.parametrize(
    ("key", "metadata", "code"),
    [
        ("incoming/train/digits/sheet-2x2.png", {}, "missing_labels"),
        (
            "incoming/train/digits/p.png",
            {"grid": "2x2", "row-labels": "1,2,3"},
            "label_count_mismatch",
        ),
        ("incoming/train/digits/p.png", {"grid": "2x2", "labels": "1,2,3"}, "label_count_mismatch"),
        ("incoming/train/digits/p.png", {"grid": "ten by ten", "label": "1"}, "bad_metadata"),
        ("incoming/train/digits/p.png", {"grid": "0x3", "label": "1"}, "bad_metadata"),
        ("incoming/train/digits/p-2x2.png", {"label": "1", "square": "maybe"}, "bad_metadata"),
        ("incoming/train/digits/p-2x2.png", {"label": "1", "rowlabels": "1,2"}, "bad_metadata"),
        ("incoming/train/digits/p-2x2.png", {"label": "1", "labels": "1,2,3,4"}, "bad_metadata"),
        ("incoming/train/digits/p-2x2.png", {"label": "has space"}, "bad_label"),
        ("incoming/train/digits/p-2x2.png", {"row-labels": "1,"}, "bad_label"),
        ("incoming/train/digits/p-2x2.png", {"label": "x" * 33}, "bad_label"),
        ("incoming/train/bad name!/7/p-2x2.png", {}, "bad_dataset_name"),
        ("incoming/train/p-2x2.png", {"label": "1"}, "bad_key"),
        ("incoming/train/a/b/c/p-2x2.png", {}, "bad_key"),
    ],
)
def test_bad_specs_are_refused_with_a_code(key: str, metadata: dict[str, str], code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        sheet_spec_from(key, "etag", metadata)
    assert caught.value.code == code
    assert caught.value.message


@pytest.mark.parametrize(
    ("name", "grid"),
    [
        ("sheet-10x10.png", (10, 10)),
        ("page-5x10.jpg", (5, 10)),
        ("10x10.png", (10, 10)),
        # Sizes in ordinary names are not grids: the grid is found on the page instead.
        ("scan_1024x768.png", None),
        ("photo_3000x2000.jpg", None),
        ("photo-3000x2000-edited.jpg", None),
        ("img.3x4.png", None),
    ],
)
def test_only_the_documented_suffix_names_a_grid(name: str, grid: tuple[int, int] | None) -> None:
    # GIVEN a sheet whose key gives its label and whose file name may hold a size
    spec = sheet_spec_from(f"incoming/train/digits/7/{name}", "e", {})
    # THEN only "-RxC" ending the name is read as its grid
    assert (spec.rows, spec.cols) == (grid if grid else (None, None))


def test_labels_may_be_separated_by_spaces_as_the_aws_cli_needs() -> None:
    # GIVEN row labels as the CLI shorthand can carry them (it splits its argument on commas)
    spec = sheet_spec_from("incoming/train/d/p.png", "e", {"grid": "2x2", "row-labels": "a b"})
    # THEN they read the same as comma-separated ones
    same = sheet_spec_from("incoming/train/d/p.png", "e", {"grid": "2x2", "row-labels": "a,b"})
    assert spec.labels == same.labels == ("a", "a", "b", "b")


def test_a_labels_manifest_carries_what_metadata_cannot() -> None:
    # GIVEN labels S3 metadata cannot hold (not ASCII), as a list in a manifest
    manifest = parse_labels_manifest(
        json.dumps({"grid": "1x3", "labels": ["中", "文", "字"], "square": True}).encode()
    )
    # WHEN the sheet's spec is read with it
    spec = sheet_spec_from("incoming/train/hanzi/p.png", "e", {}, manifest)
    # THEN every cell has its label, and the other fields apply as in metadata
    assert spec.labels == ("中", "文", "字") and spec.square and (spec.rows, spec.cols) == (1, 3)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "bad_manifest"),
        (b"[]", "bad_manifest"),
        (b'{"colour": "red"}', "bad_manifest"),
        (b'{"labels": [1, 2]}', "bad_manifest"),
        (b'{"labels": ["a,b", "c"]}', "bad_label"),  # a comma in one label is not two labels
        (b'{"label": {"x": 1}}', "bad_manifest"),
        (b"\xff\xfe", "bad_manifest"),
        (b'{"label": "' + b"x" * (2 << 20) + b'"}', "bad_manifest"),
    ],
)
def test_a_bad_labels_manifest_is_refused_clearly(body: bytes, code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_labels_manifest(body)
    assert caught.value.code == code


def test_a_field_in_both_metadata_and_manifest_is_ambiguous() -> None:
    with pytest.raises(InvalidInput) as caught:
        sheet_spec_from(
            "incoming/train/d/p.png", "e", {"label": "a"}, parse_labels_manifest(b'{"label": "b"}')
        )
    assert caught.value.code == "bad_metadata"

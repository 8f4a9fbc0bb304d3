"""Label files in every layout Coral uses, and the errors for unreadable ones."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgetpud.daemon.errors import ModelError
from edgetpud.daemon.model.labels import parse_labels, read_labels


def test_id_space_label():
    assert parse_labels("0 cat\n1 dog house\n") == {0: "cat", 1: "dog house"}


def test_id_colon_label_and_double_space():
    assert parse_labels("3:cat\n7: dog\n") == {3: "cat", 7: "dog"}
    assert parse_labels("0  person\n2  car\n\n") == {0: "person", 2: "car"}


def test_one_label_a_line_keeps_line_numbers():
    assert parse_labels("background\ncat\n\ndog\n") == {0: "background", 1: "cat", 3: "dog"}


def test_a_label_starting_with_a_digit_does_not_switch_layout():
    assert parse_labels("cat\n3 dogs\n") == {0: "cat", 1: "3 dogs"}


def test_empty_text_and_duplicates():
    assert parse_labels("") == {}
    with pytest.raises(ModelError, match="id 1 appears twice"):
        parse_labels("1 a\n1 b\n")


def test_bom_and_crlf(tmp_path: Path):
    path = tmp_path / "labels.txt"
    path.write_bytes("\ufeff0 cat\r\n1 dog\r\n".encode("utf-8"))
    assert read_labels(path) == {0: "cat", 1: "dog"}


def test_unreadable_files(tmp_path: Path):
    with pytest.raises(ModelError, match="cannot read labels"):
        read_labels(tmp_path / "missing.txt")
    with pytest.raises(ModelError, match="cannot read labels"):
        read_labels(tmp_path)
    binary = tmp_path / "labels.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(ModelError, match="not UTF-8"):
        read_labels(binary)


def test_imagenet_labels(test_data: Path):
    labels = read_labels(test_data / "imagenet_labels.txt")
    assert len(labels) == 1001
    assert labels[0] == "background"
    assert labels[283] == "tiger cat"
    assert labels[286] == "Egyptian cat"


def test_coco_labels(test_data: Path):
    labels = read_labels(test_data / "coco_labels.txt")
    assert labels[0] == "person"
    assert labels[2] == "car"
    assert labels[max(labels)] == "toothbrush"

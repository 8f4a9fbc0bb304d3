"""The suite's own fixtures: what they promise to the tests that use them."""
from __future__ import annotations

import os
from pathlib import Path

from conftest import resolve_test_data


def test_a_relative_test_data_path_is_made_absolute(tmp_path: Path, monkeypatch):
    (tmp_path / "shared" / "coral-test-data").mkdir(parents=True)
    (tmp_path / "clone").mkdir()
    monkeypatch.chdir(tmp_path / "clone")
    folder = resolve_test_data("../shared/coral-test-data")  # the README's own form
    assert folder.is_absolute()
    assert folder == (tmp_path / "shared" / "coral-test-data").resolve()
    assert folder.as_uri().startswith("file:///")
    assert os.path.samefile(folder, "../shared/coral-test-data")

"""pyproject.toml as setuptools reads it: no deprecation warnings in the quickstart's install."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

from setuptools.config.pyprojecttoml import apply_configuration
from setuptools.dist import Distribution

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python < 3.11
    import tomli as tomllib

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_setuptools_reads_pyproject_without_a_warning():
    # "`project.license` as a TOML table is deprecated" was printed three times by the quickstart's install.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), PYPROJECT)
    assert [str(w.message).splitlines()[0] for w in caught] == []
    assert dist.metadata.license_expression == "Apache-2.0"


def test_the_build_asks_for_a_setuptools_that_takes_an_spdx_license():
    # An older setuptools (a Python 3.9 box with a pinned build) would refuse the string form outright.
    requires = tomllib.loads(PYPROJECT.read_text())["build-system"]["requires"]
    assert "setuptools>=77" in requires

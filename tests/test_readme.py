"""The README's Python snippets run as written, from the folder the quickstart works in."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daemon_fixture import real_daemon_fixture

pytestmark = pytest.mark.slow  # starts worker processes or the daemon

README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = "mobilenet_v1_0.25_128_quant"

daemon = real_daemon_fixture("readme", [SMALL])


def snippets() -> list:
    """Every ```python block of the README."""
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_the_readme_has_python_snippets():
    assert snippets()


@pytest.mark.parametrize("index", range(len(snippets())))
def test_a_readme_snippet_runs_as_written_after_the_quickstart(daemon, test_data, index):
    # What the quickstart leaves: models/ with the bundles and models/images/, the address exported.
    images = daemon.workdir / "models" / "images"
    images.mkdir(exist_ok=True)
    shutil.copyfile(test_data / "cat.bmp", images / "cat.bmp")
    env = {**os.environ, "EDGETPUD_ADDRESS": daemon.address}
    done = subprocess.run([sys.executable, "-c", snippets()[index]], cwd=daemon.workdir, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("tiger cat") >= 1, done.stdout

"""Maps the top-level folders onto the ``edgetpud`` import namespace.

pyproject.toml cannot list packages computed from folders, and a bare top-level
``daemon`` package would collide with python-daemon, so the folder ``daemon/``
becomes ``edgetpud.daemon`` (and likewise ``hal``, ``mock_device``, ``protos``).
"""
from setuptools import find_packages, setup

FOLDERS = ("daemon", "hal", "mock_device", "protos")


#: ``edgetpud.client`` is what camera apps import; it re-exports edgetpud.daemon.client.
ALIASES = {"edgetpud.client": "daemon/_client_shim"}


def _packages() -> list:
    names = list(ALIASES)
    for folder in FOLDERS:
        names.append(f"edgetpud.{folder}")
        names += [
            f"edgetpud.{folder}.{sub}" for sub in find_packages(where=folder) if not sub.startswith("_client_shim")
        ]
    return names


setup(
    packages=_packages(),
    package_dir={**{f"edgetpud.{folder}": folder for folder in FOLDERS}, **ALIASES},
    package_data={f"edgetpud.{folder}": ["py.typed", "**/*.pyi", "**/*.proto"] for folder in FOLDERS},
)

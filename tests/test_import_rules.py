"""Import rules of docs/architecture.md: hal/ never pulls in the service, the mock, gRPC or protobuf.

Two checks: every import statement written in hal/ (at module level or inside a
function, relative ones resolved), and what importing the HAL and discovering a
CPU device actually loads.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Tuple

import edgetpud.hal

FORBIDDEN = ("edgetpud.daemon", "edgetpud.mock_device", "grpc", "google.protobuf")
HAL_DIR = Path(edgetpud.hal.__file__).resolve().parent


def _package_of(path: Path, root: Path, package: str) -> List[str]:
    """The dotted package a module file belongs to (``edgetpud.hal.backends`` for hal/backends/usb.py)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    parts = parts[:-1]  # the module itself (or __init__) is not part of its package
    return package.split(".") + parts


def _imported(tree: ast.AST, package: List[str]) -> Iterator[Tuple[int, str]]:
    """(line, absolute module name) of every import in ``tree``, wherever it is written."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # "from edgetpud import daemon" imports edgetpud.daemon
                yield node.lineno, f"{target}.{alias.name}"
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
                "import_module", "__import__"):
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                yield node.lineno, node.args[0].value


def violations(root: Path, package: str) -> List[str]:
    """``file:line imports name`` for every forbidden import under ``root`` (the folder of ``package``)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for line, name in _imported(tree, _package_of(path, root, package)):
            if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN):
                found.append(f"{path.relative_to(root)}:{line} imports {name}")
    return found


def test_no_module_of_hal_imports_the_service_the_mock_grpc_or_protobuf():
    assert len(list(HAL_DIR.rglob("*.py"))) >= 15  # the whole package was read, backends included
    assert violations(HAL_DIR, "edgetpud.hal") == []


def test_the_rule_catches_every_way_of_writing_an_import(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "top.py").write_text("import grpc\nfrom google.protobuf import message\n")
    (tmp_path / "sub" / "inner.py").write_text(
        "def later():\n"
        "    from ...mock_device.state import MockWorld\n"
        "    from edgetpud import daemon\n"
        "    import importlib\n"
        "    return importlib.import_module('edgetpud.daemon.service')\n"
        "from .. import errors\n"
    )
    assert violations(tmp_path, "edgetpud.hal") == [
        "sub/inner.py:2 imports edgetpud.mock_device.state",
        "sub/inner.py:2 imports edgetpud.mock_device.state.MockWorld",
        "sub/inner.py:3 imports edgetpud.daemon",
        "sub/inner.py:5 imports edgetpud.daemon.service",
        "top.py:1 imports grpc",
        "top.py:2 imports google.protobuf",
        "top.py:2 imports google.protobuf.message",
    ]


CHECK = """
import sys
import edgetpud.hal
from edgetpud.hal import DevicePool
from edgetpud.hal.discovery import Discovery, parse_specs
Discovery(parse_specs(["cpu"])).initial()
bad = [m for m in sys.modules if m.startswith(("edgetpud.daemon", "edgetpud.mock_device", "grpc", "google.protobuf"))]
print(bad)
"""


def test_hal_imports_nothing_it_must_not():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_auto_looks_only_at_the_built_in_backends():
    """``--device auto`` scans USB and PCIe (and falls back to the CPU) without importing a plug-in."""
    check = CHECK.replace('parse_specs(["cpu"])', 'parse_specs(["auto"])')
    assert check != CHECK
    out = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"

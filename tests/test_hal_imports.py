"""Import rules: hal/ never pulls in the service, gRPC, protobuf, or the mock unless asked."""
from __future__ import annotations

import subprocess
import sys

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

"""What the service says at start about a setup that would otherwise serve nothing in silence."""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from edgetpud.daemon.config import build_config
from edgetpud.daemon.service import Service

pytestmark = pytest.mark.slow  # starts worker processes or the daemon


def test_a_missing_models_folder_is_named_at_start(tmp_path: Path, caplog) -> None:
    missing = tmp_path / "nonexistent"
    config = build_config({"devices": ["mock:1"], "models_dir": str(missing), "state_dir": str(tmp_path / "state")})

    async def main() -> None:
        service = Service(config)
        with caplog.at_level(logging.WARNING):
            await service.start()
        try:
            assert service.models() == []
        finally:
            await service.stop()

    asyncio.run(main())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and str(missing) in r.getMessage()]
    assert len(warnings) == 1 and "does not exist" in warnings[0] and "--models" in warnings[0], warnings

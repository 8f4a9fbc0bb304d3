"""The CPU backend: one device, ``cpu:0``, that runs the CPU twins; ``--device auto``'s fallback."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, List, Optional

from ..backend import Backend, Found
from ..executor import TfliteExecutor

if TYPE_CHECKING:  # pragma: no cover
    from ..executor import Executor, ModelSource


class CpuBackend(Backend):
    """Always present, never lost: the host's own processor through the TFLite interpreter."""

    name = "cpu"
    spec_number = "none"
    auto_fallback = True
    order = 90

    def scan(self) -> List[Found]:
        return [Found("cpu:0", self.name, 0, "cpu")]

    @classmethod
    def open_executor(cls, model_path: "ModelSource", cpu_twin_path: Optional["ModelSource"] = None, *,
                      delegate: Any = None, device_id: str = "", num_threads: Optional[int] = None,
                      **options: Any) -> "Executor":
        """The CPU twin (``model_path`` when there is none)."""
        if options:
            raise TypeError(f"cpu executors take no option(s) {sorted(options)}")
        twin = cpu_twin_path if cpu_twin_path is not None else model_path
        return TfliteExecutor(twin, num_threads=num_threads)


BACKEND = CpuBackend

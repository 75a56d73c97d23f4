"""The ``array-api-strict`` backend.

array-api-strict implements the array API standard and nothing more, so
this backend supplies no kernels: invad's rules run on their portable
array-API LU kernels. It has no AD engine; derivatives come from
``ops.jvp`` and ``ops.vjp``. It is NumPy underneath, whose ``LinAlgError``
it raises for singular input.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from invad.backend import Backend
from invad.hookspecs import hookimpl


class StrictBackend(Backend):
    name = "array-api-strict"
    native_ad = False
    requires = ("array_api_strict",)  # what load() imports: found without importing it

    def load(self) -> None:
        import array_api_strict

        self._xp = array_api_strict

    def version(self) -> str | None:
        return str(self._xp.__version__)

    def owns(self, x: Any) -> bool:
        return type(x).__module__.startswith("array_api_strict")

    def namespace(self) -> Any:
        return self._xp

    @property
    def linalg_error(self) -> type[Exception]:
        return np.linalg.LinAlgError

    def devices(self) -> Sequence[str]:
        return ("CPU_DEVICE", "device1", "device2")

    def resolve_device(self, device: Any) -> Any:
        if device is None:
            return self._xp.Device()
        if isinstance(device, self._xp.Device):
            return device
        if device in self.devices():
            return self._xp.Device(device)
        raise ValueError(
            f"array-api-strict has the devices {', '.join(self.devices())}; got {device!r}"
        )

    def device_of(self, x: Any) -> Any:
        return x.device

    def to_numpy(self, x: Any) -> Any:
        return np.from_dlpack(self._xp.asarray(x, device=self._xp.Device()))

    def from_numpy(self, x: Any, device: Any) -> Any:
        return self._xp.asarray(x, device=device)


@hookimpl
def invad_backends() -> list[Backend]:
    return [StrictBackend()]

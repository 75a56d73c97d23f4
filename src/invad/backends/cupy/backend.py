"""The CuPy backend: plain functions on NVIDIA GPUs, derivatives via ``ops.jvp/vjp``.

CuPy has no AD engine, so, as for NumPy, the ops are the rules' functional
ops. cupy is imported only in :meth:`CupyBackend.load`, which says which of
the two requirements is missing: cupy itself (``ImportError``) or a CUDA
device that cupy can see (``RuntimeError``). ``load`` binds the modules that
the kernels use, ``cupy`` and ``cupyx``, in :mod:`._state`; the kernels
(:mod:`.kernels`) take them as parameters, so that tests without a GPU can
run the same code on stand-ins (``tests/test_cupy_standin.py``: logic
coverage only).

Devices. CuPy computes on its *current device* and refuses arrays that live
on another one. Every op, and ``ops.jvp/vjp``, runs with its first input's
device current (:meth:`CupyBackend.on_device_of`), so outputs stay next to
their inputs. ``install(device=k)`` (an index,
``"cuda:k"`` or a ``cupy.cuda.Device``) says where arrays that the backend
creates (``from_numpy``) go; the default is the current device.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import array_api_compat
import numpy as np

from ...backend import ZERO_PIVOT, Backend
from ...hookspecs import hookimpl
from ...rules import Linalg, Rule
from . import _state
from .kernels import CupyKernels


class CupyBackend(Backend):
    name = "cupy"
    array_type = "cupy.ndarray"
    native_ad = False

    def __init__(self) -> None:
        self._device_count = 0
        self._devices: dict[int, Any] = {}  # one cupy.cuda.Device per id: stable install keys

    def load(self) -> None:
        try:
            import cupy
        except ModuleNotFoundError as exc:
            if exc.name not in ("cupy", None):
                raise ImportError(f"cupy is installed but cannot be imported: {exc}") from exc
            raise ImportError(
                "cupy is not installed (No module named 'cupy'); pip install 'invad[cupy]'"
            ) from exc
        except ImportError as exc:
            raise ImportError(f"cupy is installed but cannot be imported: {exc}") from exc
        version = getattr(cupy, "__version__", "?")
        try:
            count = int(cupy.cuda.runtime.getDeviceCount())
        except Exception as exc:  # CUDARuntimeError: no driver, no device
            raise RuntimeError(
                f"cupy {version} is installed but no CUDA device is visible ({exc})"
            ) from exc
        if count < 1:
            raise RuntimeError(
                f"cupy {version} is installed but no CUDA device is visible "
                "(cupy.cuda.runtime.getDeviceCount() == 0)"
            )
        import array_api_compat.cupy  # noqa: F401  (the namespace)
        import cupy.cublas  # get_batched_gesv_limit: `import cupy` does not import it
        import cupyx
        import cupyx.scipy.linalg  # the kernels

        self._device_count = count
        _state.cupy, _state.cupyx = cupy, cupyx

    def version(self) -> str | None:
        return str(_state.cupy.__version__)

    def owns(self, x: Any) -> bool:
        return bool(array_api_compat.is_cupy_array(x))

    def namespace(self) -> Any:
        import array_api_compat.cupy

        return array_api_compat.cupy

    @property
    def linalg_error(self) -> type[Exception]:
        return np.linalg.LinAlgError  # what cupy.linalg raises too

    # -- devices --------------------------------------------------------------

    def devices(self) -> Sequence[str]:
        return tuple(f"cuda:{k}" for k in range(self._device_count))

    def _device(self, k: int) -> Any:
        device = self._devices.get(k)
        if device is None:
            device = self._devices[k] = _state.cupy.cuda.Device(k)
        return device

    def resolve_device(self, device: Any) -> Any:
        """``None`` (the current device), an index ``k``, ``"cuda:k"`` or a ``cupy.cuda.Device``."""
        cupy = _state.cupy
        k: int | None = None
        if device is None:
            k = cupy.cuda.Device().id  # no argument: the current device
        elif isinstance(device, cupy.cuda.Device):
            k = device.id
        elif isinstance(device, (int, np.integer)) and not isinstance(device, bool):
            k = int(device)
        elif isinstance(device, str):
            match = re.fullmatch(r"cuda(?::(\d+))?", device.strip())
            if match:
                k = int(match.group(1)) if match.group(1) else cupy.cuda.Device().id
        if k is None or not 0 <= k < self._device_count:
            raise ValueError(
                f"backend 'cupy' has no device {device!r}; devices are {', '.join(self.devices())}"
            )
        return self._device(k)

    def device_of(self, x: Any) -> Any:
        """``"cuda:k"`` for a CuPy array on GPU ``k``; other arrays: their device (NumPy: cpu)."""
        if array_api_compat.is_cupy_array(x):
            return f"cuda:{x.device.id}"
        return array_api_compat.device(x)

    def on_device_of(self, x: Any) -> AbstractContextManager[Any]:
        """``with cupy.cuda.Device(k)`` for an array on GPU ``k``: CuPy computes on the current."""
        if array_api_compat.is_cupy_array(x):
            return _state.cupy.cuda.Device(x.device.id)  # a fresh Device: its own context stack
        return nullcontext()

    def kernels(self, device: Any) -> CupyKernels:
        return CupyKernels(self.namespace(), _state.cupy, _state.cupyx)

    def raise_if_singular(
        self, op: str, shape: tuple[int, ...], info: Any, what: str = ZERO_PIVOT
    ) -> None:
        if info.size and bool(info.any()):  # one reduction and one sync in the common case
            super().raise_if_singular(op, shape, info, what)

    def native_op(
        self, rule: Rule, la: Linalg, functional: Callable[..., Any]
    ) -> Callable[..., Any]:
        """No AD engine: the functional op, run with its first input's device current."""
        first = rule.contract.inputs[0]
        on_device_of = self.on_device_of

        @functools.wraps(functional)
        def op(*args: Any, **kwargs: Any) -> Any:
            with on_device_of(args[0] if args else kwargs.get(first)):
                return functional(*args, **kwargs)

        return op

    def to_numpy(self, x: Any) -> Any:
        return _state.cupy.asnumpy(x)

    def from_numpy(self, x: Any, device: Any) -> Any:
        with _state.cupy.cuda.Device(device):
            return _state.cupy.asarray(np.asarray(x))


@hookimpl
def invad_backends() -> list[Backend]:
    return [CupyBackend()]

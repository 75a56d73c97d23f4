"""The CuPy backend: plain functions on NVIDIA GPUs, derivatives via ``ops.jvp/vjp``.

CuPy has no AD engine, so, as for NumPy, the ops are the rules' functional
ops. cupy is imported only in :meth:`CupyBackend.load`, which says which of
the two requirements is missing: cupy itself (``ImportError``) or a CUDA
device that cupy can see (``RuntimeError``).

Kernels. What CuPy documents, and what it does not:

- ``cupyx.scipy.linalg.lu_factor`` / ``lu_solve`` (cuSOLVER ``getrf`` /
  ``getrs``) take one ``(M, M)`` matrix: they are not batched. ``lu_factor``
  returns ``(lu, piv)`` with 0-based pivots and no ``info`` (it only warns);
  ``lu_solve`` takes ``trans`` 0, 1 or 2 (``a``, ``a^T``, ``a^H``).
- CuPy's reference documents no batched LU factor or solve. Its cuBLAS
  batched ``getrf``/``getrs`` run inside ``cupy.linalg.solve`` and
  ``cupy.linalg.inv`` on stacks of matrices; the raw bindings behind them
  (``cupy.cuda.cublas``, ``cupy.cublas``) are internals this backend does
  not call.
- ``cupy.linalg.solve`` and ``cupy.linalg.inv`` do not check for singular
  matrices unless ``cupyx.errstate(linalg="raise")`` is in effect, and then
  raise ``numpy.linalg.LinAlgError`` (CuPy raises NumPy's exception class).

So, as the NumPy backend does with SciPy and NumPy:

- one matrix (``a.ndim == 2``) and stacks of matrices larger than
  :data:`BATCHED_MAX_N`: factored with ``cupyx.scipy.linalg.lu_factor``, one
  call per matrix (a Python loop over the batch), and the factors kept, so
  the solves of a derivative reuse them through ``lu_solve`` (one call for a
  single matrix, all right-hand sides packed as columns; one call per matrix
  otherwise);
- stacks of matrices up to :data:`BATCHED_MAX_N`: one batched
  ``cupy.linalg.solve`` (or ``cupy.linalg.inv``) under
  ``cupyx.errstate(linalg="raise")``. A Python loop of cuSOLVER calls over a
  large batch of small matrices costs far more than factoring them again in
  one batched call, so their "factorization" is the matrix itself and each
  derivative solve is another batched ``cupy.linalg.solve``. If a matrix is
  singular, CuPy raises; the batch is then factored with invad's portable
  LU, vectorised over the batch, to find ``info`` exactly;
- ``info`` is LAPACK ``getrf``'s: the first ``k`` with ``U[k-1, k-1] == 0``,
  read off the diagonal of the factors, else 0.

:data:`BATCHED_MAX_N` is CuPy's own cut-off: up to it ``cupy.linalg.solve``
uses the cuBLAS batched routines, above it it loops over the batch with
cuSOLVER itself, so looping here loses nothing and keeps the factors. It is
not a measured crossover: no GPU was at hand when this was written.

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
import warnings
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import array_api_compat
import numpy as np

from ..backend import Backend
from ..hookspecs import hookimpl
from ..rules import Factor, Linalg, Rule
from ..rules._linalg import Trans, broadcast_batch, portable_lu_factor, portable_lu_solve

#: Largest ``n`` for which stacks of ``n x n`` matrices go through CuPy's batched solver.
BATCHED_MAX_N = 256

_TRANS = {"N": 0, "T": 1, "H": 2}

_cupy: Any = None  # the cupy module, after CupyBackend.load()


def _op(a: Any, trans: Trans) -> Any:
    if trans == "N":
        return a
    at = a.swapaxes(-1, -2)
    return at.conj() if trans == "H" else at


def _getrf_info(lu: Any) -> Any:
    """LAPACK ``info`` of packed LU factors: the first ``k`` with ``U[k-1, k-1] == 0``, else 0."""
    cupy = _cupy
    batch = lu.shape[:-2]
    if lu.size == 0:
        return cupy.zeros(batch, dtype=cupy.int32)
    zero = cupy.diagonal(lu, axis1=-2, axis2=-1) == 0
    first = cupy.argmax(zero.astype(cupy.int8), axis=-1).astype(cupy.int32) + 1
    return cupy.where(zero.any(axis=-1), first, 0).astype(cupy.int32)


class CupyKernels:
    """``lu_factor``, ``lu_solve``, ``solve`` and ``inv`` over CuPy arrays (module docstring)."""

    def __init__(self, xp: Any) -> None:
        import cupyx
        import cupyx.scipy.linalg

        self._xp = xp
        self._cupyx = cupyx
        self._scipy_linalg = cupyx.scipy.linalg

    def _batched(self, a: Any) -> bool:
        return a.ndim > 2 and a.shape[-1] <= BATCHED_MAX_N

    def lu_factor(self, a: Any) -> tuple[Factor, Any]:
        """cuSOLVER ``getrf`` on each matrix of the batch; ``info`` from the diagonal of ``U``."""
        cupy = _cupy
        batch, n = a.shape[:-2], a.shape[-1]
        # Each factor column-major, as cuSOLVER stores it, so lu_solve need not copy it.
        lu = cupy.empty((*batch, n, n), dtype=a.dtype).swapaxes(-1, -2)
        piv = cupy.empty((*batch, n), dtype=cupy.int32)
        if a.size:
            lu_factor = self._scipy_linalg.lu_factor
            with warnings.catch_warnings():
                # Singular input is expected (the _ex ops); info reports it.
                warnings.filterwarnings("ignore", "Diagonal number", RuntimeWarning)
                for i in np.ndindex(*batch):
                    lu[i], piv[i] = lu_factor(a[i], check_finite=False)
        return Factor(a, lu, piv), _getrf_info(lu)

    def lu_solve(self, factor: Factor, b: Any, trans: Trans = "N") -> Any:
        """``op(A)^-1 b`` from the factors, or by a batched solve where ``a`` was not factored."""
        cupy = _cupy
        if factor.lu is None:
            return self._batched_solve(factor.a, b, trans)
        lu, piv = factor.lu, factor.pivots.astype(cupy.int32, copy=False)
        n = lu.shape[-1]
        dtype = cupy.result_type(lu.dtype, b.dtype)
        batch = broadcast_batch(tuple(lu.shape[:-2]), tuple(b.shape[:-2]))
        if b.size == 0 or lu.size == 0:
            return cupy.zeros((*batch, *b.shape[-2:]), dtype=dtype)
        lu_solve = self._scipy_linalg.lu_solve
        code = _TRANS[trans]
        lu = lu.astype(dtype, copy=False)
        b = b.astype(dtype, copy=False)
        if lu.ndim == 2:  # one matrix: every right-hand side of the batch in one call
            cols = cupy.moveaxis(b, -2, 0).reshape(n, -1)
            x = lu_solve((lu, piv), cols, trans=code, check_finite=False)
            return cupy.moveaxis(x.reshape(n, *b.shape[:-2], b.shape[-1]), 0, -2)
        lu = cupy.broadcast_to(lu, (*batch, n, n))
        piv = cupy.broadcast_to(piv, (*batch, n))
        b = cupy.broadcast_to(b, (*batch, *b.shape[-2:]))
        x = cupy.empty(b.shape, dtype=dtype)
        for i in np.ndindex(*batch):
            x[i] = lu_solve((lu[i], piv[i]), b[i], trans=code, check_finite=False)
        return x

    def _batched_solve(self, a: Any, b: Any, trans: Trans) -> Any:
        """``op(a)^-1 b`` by ``cupy.linalg.solve``, batch dimensions broadcast first."""
        cupy = _cupy
        dtype = cupy.result_type(a.dtype, b.dtype)
        n = a.shape[-1]
        batch = broadcast_batch(tuple(a.shape[:-2]), tuple(b.shape[:-2]))
        shape = (*batch, *b.shape[-2:])
        if a.size == 0 or b.size == 0:
            return cupy.zeros(shape, dtype=dtype)
        a = cupy.broadcast_to(_op(a, trans).astype(dtype, copy=False), (*batch, n, n))
        return cupy.linalg.solve(a, cupy.broadcast_to(b.astype(dtype, copy=False), shape))

    def solve(self, a: Any, b: Any, trans: Trans = "N") -> tuple[Factor, Any, Any]:
        cupy = _cupy
        if self._batched(a) and a.size and b.size:
            try:
                with self._cupyx.errstate(linalg="raise"):
                    x = self._batched_solve(a, b, trans)
            except np.linalg.LinAlgError:
                # Some matrix is singular: factor the batch, vectorised, to say which.
                factor, info = portable_lu_factor(self._xp, a)
                return factor, portable_lu_solve(self._xp, factor, b, trans), info
            return Factor(a, None, None), x, cupy.zeros(a.shape[:-2], dtype=cupy.int32)
        factor, info = self.lu_factor(a)
        return factor, self.lu_solve(factor, b, trans), info

    def inv(self, a: Any) -> tuple[Any, Any]:
        cupy = _cupy
        batch, n = a.shape[:-2], a.shape[-1]
        if a.size == 0:
            return cupy.zeros(a.shape, dtype=a.dtype), cupy.zeros(batch, dtype=cupy.int32)
        try:
            with self._cupyx.errstate(linalg="raise"):
                return cupy.linalg.inv(a), cupy.zeros(batch, dtype=cupy.int32)
        except np.linalg.LinAlgError:
            pass  # some matrix is singular: factor them to say which, as getrf would
        eye = cupy.eye(n, dtype=a.dtype)
        if self._batched(a):
            factor, info = portable_lu_factor(self._xp, a)
            return portable_lu_solve(self._xp, factor, eye, "N"), info
        factor, info = self.lu_factor(a)
        return self.lu_solve(factor, eye, "N"), info


class CupyBackend(Backend):
    name = "cupy"
    native_ad = False

    def __init__(self) -> None:
        self._device_count = 0
        self._devices: dict[int, Any] = {}  # one cupy.cuda.Device per id: stable install keys

    def load(self) -> None:
        global _cupy
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
        import cupyx.scipy.linalg  # noqa: F401  (the kernels)

        self._device_count = count
        _cupy = cupy

    def version(self) -> str | None:
        return str(_cupy.__version__)

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
            device = self._devices[k] = _cupy.cuda.Device(k)
        return device

    def resolve_device(self, device: Any) -> Any:
        """``None`` (the current device), an index ``k``, ``"cuda:k"`` or a ``cupy.cuda.Device``."""
        cupy = _cupy
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
            return _cupy.cuda.Device(x.device.id)  # a fresh Device: its own context stack
        return nullcontext()

    def kernels(self, device: Any) -> CupyKernels:
        return CupyKernels(self.namespace())

    def raise_if_singular(self, op: str, shape: tuple[int, ...], info: Any) -> None:
        if info.size and bool(info.any()):  # one reduction and one sync in the common case
            super().raise_if_singular(op, shape, info)

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
        return _cupy.asnumpy(x)

    def from_numpy(self, x: Any, device: Any) -> Any:
        with _cupy.cuda.Device(device):
            return _cupy.asarray(np.asarray(x))


@hookimpl
def invad_backends() -> list[Backend]:
    return [CupyBackend()]

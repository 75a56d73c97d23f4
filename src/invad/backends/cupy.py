"""The CuPy backend: plain functions on NVIDIA GPUs, derivatives via ``ops.jvp/vjp``.

CuPy has no AD engine, so, as for NumPy, the ops are the rules' functional
ops. cupy is imported only in :meth:`CupyBackend.load`, which says which of
the two requirements is missing: cupy itself (``ImportError``) or a CUDA
device that cupy can see (``RuntimeError``). ``load`` binds the modules that
the kernels use, ``cupy`` and ``cupyx``, to this module's globals; the
kernels take them as parameters, so that tests without a GPU can run the same
code on stand-ins (``tests/test_cupy_standin.py``: logic coverage only).

What CuPy offers, read from its source (v13 and v14):

- ``cupyx.scipy.linalg.lu_factor`` / ``lu_solve`` (cuSOLVER ``getrf`` /
  ``getrs``) take one matrix, not a batch. ``lu_factor`` copies its input to
  Fortran order, so it factors ``A`` itself; it returns 0-based pivots and
  no ``info``, and warns on a zero pivot. ``lu_solve`` takes ``trans`` 0, 1
  or 2 (``A``, ``A^T``, ``A^H``).
- ``cupy.linalg.solve`` on a stack of matrices with ``n`` at most
  ``cupy.cublas.get_batched_gesv_limit()`` (256 unless the user sets it) is
  one cuBLAS ``getrfBatched``/``getrsBatched`` call on a column-major copy
  of ``A``: it factors ``A`` itself. Above the limit it loops over the batch.
- ``cupy.linalg.inv`` factors ``A^T`` whenever its input is C-ordered: the
  2-D case solves ``gesv(a.T, I)``, a stack goes C-ordered into the
  column-major ``getrfBatched``. Given ``A`` Fortran-ordered (2-D), or
  ``A^T`` as a view (a stack: ``inv(a.mT).mT``), it factors ``A``.
- These routines check for a zero pivot only under
  ``cupyx.errstate(linalg="raise")`` (thread-local), and then raise
  ``numpy.linalg.LinAlgError``; otherwise a singular matrix gives
  non-finite values in its own batch element only.

Paths. ``limit`` is ``cupy.cublas.get_batched_gesv_limit()``, read at each
call, so ``set_batched_gesv_limit`` moves both CuPy's and invad's cut-off:

- one matrix (``a.ndim == 2``), and stacks with ``n > limit``: each matrix
  factored with ``lu_factor`` (a Python loop over the batch; each call
  synchronizes, as ``lu_factor`` reads cuSOLVER's ``info``), the factors
  kept, and every solve of a derivative made from them with ``lu_solve``
  (one call for a single matrix, all right-hand sides packed as columns; one
  call per matrix otherwise). ``info`` is read off ``U``'s diagonal: exactly
  cuSOLVER ``getrf``'s for ``A``. ``inv`` of one matrix is
  ``cupy.linalg.inv`` on a Fortran-ordered ``A`` (cuSOLVER ``getrf`` of
  ``A``); of a stack above the limit, ``lu_factor`` and ``lu_solve`` per
  matrix, as ``solve``.
- stacks with ``n <= limit``: batched calls only. ``solve`` is one
  ``cupy.linalg.solve`` under ``errstate(linalg="raise")``; the "factor" kept
  is the matrix itself, and each derivative solve is one more batched
  ``cupy.linalg.solve`` (a loop of cuSOLVER calls over a large batch of
  small matrices costs more than factoring them again in one call). A right
  solve (``left=False``) hands CuPy ``A^T``, so a second batched call on
  ``A`` with one right-hand side decides whether ``getrf(A)`` meets a zero
  pivot: twice the factorization work of a left solve, in the forward only.
  An empty ``b`` makes that one check call. ``inv`` is
  ``cupy.linalg.inv(a.mT).mT`` under ``errstate(linalg="raise")``.
- where a batched call raises, some matrix is singular: the values are
  computed again without the check (the other matrices' results are the
  same as without the singular one), and ``info`` comes from invad's
  portable LU (:func:`~invad.rules._linalg.portable_lu_factor`), vectorised
  over the batch. Derivatives stay batched calls.

``info`` and the errors. ``info`` is LAPACK ``getrf``'s for ``A`` itself,
never for ``A^T``; ``inv``/``solve`` raise exactly where it is nonzero, and
``inv_ex`` and ``solve_ex`` give the same ``info``. On the per-matrix paths
it is cuSOLVER's own. On the batched paths CuPy decides *whether* a batch
holds a singular matrix (cuBLAS ``getrfBatched`` of ``A``), the portable LU
*which* and at which step: it runs LAPACK's unblocked algorithm, so on
exact zero pivots that any elimination order produces (a zero column, two
equal rows) it agrees with cuBLAS; a pivot that is zero only through
rounding can come out differently, as between two LAPACK builds, and for
complex matrices the two agree on the pivot row only where the portable LU
compares ``|Re| + |Im|``, as LAPACK does.

Nothing here is timed: no GPU was at hand when this was written, and the
GPU path is tested only by ``tests/test_cupy.py`` on a machine with one.

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

from ..backend import ZERO_PIVOT, Backend
from ..hookspecs import hookimpl
from ..rules import Factor, Linalg, Rule
from ..rules._linalg import Trans, broadcast_batch, portable_lu_factor

_TRANS = {"N": 0, "T": 1, "H": 2}

# The modules the kernels use, bound by CupyBackend.load().
_cupy: Any = None
_cupyx: Any = None


def _op(a: Any, trans: Trans) -> Any:
    if trans == "N":
        return a
    at = a.swapaxes(-1, -2)
    return at.conj() if trans == "H" else at


# -- cuSOLVER's zero-pivot warning ------------------------------------------------
# lu_factor warns "Diagonal number k is exactly zero" on a singular matrix; the
# _ex ops expect singular input and report it in info. warnings.catch_warnings
# swaps the process-wide filter list, which races with other threads (one thread
# per GPU is common with CuPy). Instead, invad calls the function that warns
# (cupyx's _lu_factor, whose warning is attributed to its caller) and keeps one
# filter in place that matches only warnings attributed to this module: users'
# own lu_factor calls still warn.

_ZERO_PIVOT_MESSAGE = r"Diagonal number \d+ is exactly zero"
_ZERO_PIVOT_FILTER = (
    "ignore",
    re.compile(_ZERO_PIVOT_MESSAGE, re.IGNORECASE),
    RuntimeWarning,
    re.compile(re.escape(__name__) + r"\Z"),
    0,
)


def _quiet_zero_pivots() -> None:
    """Put the filter first (again, if a ``catch_warnings`` elsewhere dropped or buried it)."""
    if not warnings.filters or warnings.filters[0] != _ZERO_PIVOT_FILTER:
        _, message, category, module, _ = _ZERO_PIVOT_FILTER
        warnings.filterwarnings("ignore", message.pattern, category, module.pattern)


def _getrf_info(cupy: Any, lu: Any) -> Any:
    """LAPACK ``info`` of packed LU factors: the first ``k`` with ``U[k-1, k-1] == 0``, else 0."""
    batch = lu.shape[:-2]
    if lu.size == 0:
        return cupy.zeros(batch, dtype=cupy.int32)
    zero = cupy.diagonal(lu, axis1=-2, axis2=-1) == 0
    first = cupy.argmax(zero.astype(cupy.int8), axis=-1).astype(cupy.int32) + 1
    return cupy.where(zero.any(axis=-1), first, 0).astype(cupy.int32)


class CupyKernels:
    """``lu_factor``, ``lu_solve``, ``solve`` and ``inv`` over CuPy arrays (module docstring).

    ``xp`` is the array API namespace (for the portable LU), ``cupy`` and
    ``cupyx`` the modules (or stand-ins with the same attributes).
    """

    def __init__(self, xp: Any, cupy: Any, cupyx: Any) -> None:
        self._xp = xp
        self._cupy = cupy
        self._cupyx = cupyx
        linalg = cupyx.scipy.linalg
        self._lu_solve = linalg.lu_solve
        # cupyx's lu_factor is `return _lu_factor(a, overwrite_a, check_finite)`; calling
        # _lu_factor directly puts this module at the warning's stack level (see above).
        # Should a CuPy release drop it, the public lu_factor's warning goes through.
        private = getattr(getattr(linalg, "_decomp_lu", None), "_lu_factor", None)
        self._getrf: Callable[[Any, bool, bool], tuple[Any, Any]] = (
            private if callable(private) else linalg.lu_factor
        )

    # -- routing ------------------------------------------------------------------

    def batched_limit(self) -> int:
        """CuPy's cut-off for its batched solver, ``cupy.cublas.get_batched_gesv_limit()``."""
        return int(self._cupy.cublas.get_batched_gesv_limit())

    def _batched(self, a: Any) -> bool:
        return a.ndim > 2 and a.shape[-1] <= self.batched_limit()

    def _linalg_errors(self, check: bool) -> AbstractContextManager[Any]:
        """``errstate(linalg="raise")`` to detect a zero pivot; ``"ignore"`` elsewhere.

        Explicit both ways: a user's ``cupyx.seterr(linalg="raise")`` must not make
        a derivative raise, nor synchronize each call to read ``info``.
        """
        return self._cupyx.errstate(linalg="raise" if check else "ignore")

    # -- one matrix at a time: cuSOLVER getrf / getrs ---------------------------------

    def lu_factor(self, a: Any) -> tuple[Factor, Any]:
        """cuSOLVER ``getrf`` of each matrix ``A`` of the batch; ``info`` from ``U``'s diagonal."""
        cupy = self._cupy
        batch, n = a.shape[:-2], a.shape[-1]
        # Each factor column-major, as cuSOLVER stores it, so lu_solve need not copy it.
        lu = cupy.empty((*batch, n, n), dtype=a.dtype).swapaxes(-1, -2)
        piv = cupy.empty((*batch, n), dtype=cupy.int32)
        if a.size:
            getrf = self._getrf
            _quiet_zero_pivots()
            for i in np.ndindex(*batch):
                lu[i], piv[i] = getrf(a[i], False, False)  # (a, overwrite_a, check_finite)
        return Factor(a, lu, piv), _getrf_info(cupy, lu)

    def lu_solve(self, factor: Factor, b: Any, trans: Trans = "N") -> Any:
        """``op(A)^-1 b`` from the factors, or by a batched solve where ``a`` was not factored."""
        cupy = self._cupy
        if factor.lu is None:
            return self._batched_solve(factor.a, b, trans)
        lu, piv = factor.lu, factor.pivots.astype(cupy.int32, copy=False)
        n = lu.shape[-1]
        dtype = cupy.result_type(lu.dtype, b.dtype)
        batch = broadcast_batch(tuple(lu.shape[:-2]), tuple(b.shape[:-2]))
        if b.size == 0 or lu.size == 0:
            return cupy.zeros((*batch, *b.shape[-2:]), dtype=dtype)
        lu_solve = self._lu_solve
        code = _TRANS[trans]
        lu = lu.astype(dtype, copy=False)
        b = b.astype(dtype, copy=False)
        with self._linalg_errors(check=False):
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

    # -- stacks of small matrices: cuBLAS batched calls ------------------------------

    def _batched_solve(self, a: Any, b: Any, trans: Trans, *, check: bool = False) -> Any:
        """``op(a)^-1 b`` by one ``cupy.linalg.solve``; ``check``: raise on a zero pivot."""
        cupy = self._cupy
        dtype = cupy.result_type(a.dtype, b.dtype)
        n = a.shape[-1]
        batch = broadcast_batch(tuple(a.shape[:-2]), tuple(b.shape[:-2]))
        shape = (*batch, *b.shape[-2:])
        if a.size == 0 or b.size == 0:
            return cupy.zeros(shape, dtype=dtype)
        a = cupy.broadcast_to(_op(a, trans).astype(dtype, copy=False), (*batch, n, n))
        b = cupy.broadcast_to(b.astype(dtype, copy=False), shape)
        with self._linalg_errors(check):
            return cupy.linalg.solve(a, b)

    def _has_zero_pivot(self, a: Any) -> bool:
        """Whether cuBLAS ``getrfBatched`` of ``A`` itself meets a zero pivot (one batched call)."""
        cupy = self._cupy
        try:
            self._batched_solve(a, cupy.zeros((*a.shape[:-1], 1), dtype=a.dtype), "N", check=True)
        except np.linalg.LinAlgError:
            return True
        return False

    def _portable_info(self, a: Any) -> Any:
        """Which matrices are singular, and at which step: the portable LU over the batch."""
        return portable_lu_factor(self._xp, a)[1]

    def solve(self, a: Any, b: Any, trans: Trans = "N") -> tuple[Factor, Any, Any]:
        cupy = self._cupy
        if not self._batched(a):
            factor, info = self.lu_factor(a)
            return factor, self.lu_solve(factor, b, trans), info
        factor = Factor(a, None, None)  # not factored: each derivative solve is batched too
        info = cupy.zeros(a.shape[:-2], dtype=cupy.int32)
        if a.size == 0:
            return factor, self._batched_solve(a, b, trans), info
        if trans == "N" and b.size:
            try:  # cuBLAS factors A itself here: its zero pivots are getrf(A)'s
                return factor, self._batched_solve(a, b, "N", check=True), info
            except np.linalg.LinAlgError:
                singular = True
        else:  # CuPy would factor op(A), or nothing (empty b): ask about A itself
            singular = self._has_zero_pivot(a)
        if singular:
            info = self._portable_info(a)
        return factor, self._batched_solve(a, b, trans), info

    def inv(self, a: Any) -> tuple[Any, Any]:
        cupy = self._cupy
        batch, n = a.shape[:-2], a.shape[-1]
        info = cupy.zeros(batch, dtype=cupy.int32)
        if a.size == 0:
            return cupy.zeros(a.shape, dtype=a.dtype), info
        if a.ndim > 2 and not self._batched(a):  # as solve: cuSOLVER per matrix, factors kept
            factor, info = self.lu_factor(a)
            return self.lu_solve(factor, cupy.eye(n, dtype=a.dtype), "N"), info
        if a.ndim == 2:

            def inverse(check: bool) -> Any:  # Fortran order: cuSOLVER getrf of A, not A^T
                with self._linalg_errors(check):
                    return cupy.linalg.inv(cupy.asfortranarray(a))

        else:

            def inverse(check: bool) -> Any:  # A^T C-ordered is A column-major: getrfBatched(A)
                with self._linalg_errors(check):
                    return cupy.linalg.inv(a.swapaxes(-1, -2)).swapaxes(-1, -2)

        try:
            return inverse(check=True), info
        except np.linalg.LinAlgError:
            pass  # some matrix is singular: say which, as getrf of A would
        if a.ndim == 2:
            factor, info = self.lu_factor(a)
            return self.lu_solve(factor, cupy.eye(n, dtype=a.dtype), "N"), info
        return inverse(check=False), self._portable_info(a)


class CupyBackend(Backend):
    name = "cupy"
    array_type = "cupy.ndarray"
    native_ad = False

    def __init__(self) -> None:
        self._device_count = 0
        self._devices: dict[int, Any] = {}  # one cupy.cuda.Device per id: stable install keys

    def load(self) -> None:
        global _cupy, _cupyx
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
        _cupy, _cupyx = cupy, cupyx

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
        return CupyKernels(self.namespace(), _cupy, _cupyx)

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
        return _cupy.asnumpy(x)

    def from_numpy(self, x: Any, device: Any) -> Any:
        with _cupy.cuda.Device(device):
            return _cupy.asarray(np.asarray(x))


@hookimpl
def invad_backends() -> list[Backend]:
    return [CupyBackend()]

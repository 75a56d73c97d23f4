"""The ``autograd`` backend: invad's ops as HIPS autograd primitives.

Arrays are NumPy arrays, so the array namespace is ``array_api_compat.numpy``
and the kernels are invad's NumPy/LAPACK ones. What autograd adds is the AD
engine: :meth:`AutogradBackend.native_op` makes each op an autograd primitive
(see :mod:`invad_autograd._native`), so that ``autograd.grad``, ``jacobian``,
``hessian``, ``make_jvp``, ... work through ``ops.inv``, ``ops.solve``, ... to
any order.

Importing this module does not import autograd: :meth:`AutogradBackend.load`
does, and reports a missing autograd as the reason the backend is unavailable.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from numbers import Number
from typing import Any

import array_api_compat.numpy
import numpy as np

from invad.backend import ZERO_PIVOT, Backend, not_accepted
from invad.hookspecs import hookimpl
from invad.rules import Linalg, Rule


class AutogradBackend(Backend):
    name = "autograd"
    native_ad = True
    array_type = "numpy.ndarray (or nested lists and scalars, as autograd.numpy.linalg does)"
    requires = ("autograd", "scipy")  # what load() imports: found without importing them

    def load(self) -> None:
        import autograd  # noqa: F401  (raises ImportError when it is missing)
        import scipy.linalg  # noqa: F401  (invad's NumPy kernels need it)

        from . import _native

        self._native = _native

    def version(self) -> str | None:
        return importlib.metadata.version("autograd")

    def owns(self, x: Any) -> bool:
        # autograd's arrays are NumPy arrays, which invad's numpy backend owns; what
        # is autograd's own is the box it wraps them in while tracing (ArrayBox).
        return type(x).__module__.startswith("autograd.")

    def accept(self, op: str, names: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """Unboxed inputs: NumPy arrays as they are; lists and scalars converted, as
        autograd.numpy converts them; any other framework's array is a TypeError."""
        out = []
        for name, x in zip(names, args):
            if not isinstance(x, np.ndarray):
                if not isinstance(x, (list, tuple, Number, np.generic)):
                    raise TypeError(not_accepted(self, op, name, x))
                x = np.asarray(x)
            out.append(x)
        return tuple(out)

    def namespace(self) -> Any:
        return array_api_compat.numpy

    @property
    def linalg_error(self) -> type[Exception]:
        return np.linalg.LinAlgError

    def device_of(self, x: Any) -> Any:
        return "cpu"  # NumPy arrays, boxed or not, live on the host

    def kernels(self, device: Any) -> Any:
        from invad.backends.numpy import NumpyKernels

        return NumpyKernels()

    def raise_if_singular(
        self, op: str, shape: tuple[int, ...], info: Any, what: str = ZERO_PIVOT
    ) -> None:
        if info.any():  # fast exit first: this runs on every call
            super().raise_if_singular(op, shape, info, what)

    def native_op(
        self, rule: Rule, la: Linalg, functional: Callable[..., Any]
    ) -> Callable[..., Any] | None:
        return self._native.native_op(rule, la, self)

    # -- native AD (the conformance kit checks the primitives against the rules) ----

    def native_jvp(
        self, fn: Callable[..., Any], primals: tuple[Any, ...], tangents: tuple[Any, ...]
    ) -> Any:
        """Forward mode per input (``make_jvp`` takes one argnum); the sum is the JVP."""
        from autograd import make_jvp

        total = None
        for i, tangent in enumerate(tangents):
            _, part = make_jvp(_packed(fn), i)(*primals)(tangent)
            total = part if total is None else _tree(np.add, total, part)
        return total

    def native_vjp(self, fn: Callable[..., Any], primals: tuple[Any, ...], cotangent: Any) -> Any:
        """autograd's reverse mode is the linear transpose; conjugating gives the adjoint.

        ``cotangent`` is a tuple where ``fn`` returns several outputs (``slogdet``).
        """
        from autograd import make_vjp

        cotangents = []
        for i in range(len(primals)):
            pullback, _ = make_vjp(_packed(fn), i)(*primals)
            cotangents.append(np.conj(pullback(_tree(np.conj, cotangent))))
        return tuple(cotangents)

    def to_numpy(self, x: Any) -> Any:
        return np.asarray(self._native.getval(x))


def _packed(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with a tuple result packed as autograd's differentiable tuple.

    autograd traces one output value: a plain Python tuple of boxes would look
    independent of the input, so several outputs go into ``autograd.builtins.tuple``.
    """
    from autograd.builtins import tuple as traced_tuple

    def packed(*xs: Any) -> Any:
        out = fn(*xs)
        return traced_tuple(out) if isinstance(out, tuple) else out

    return packed


def _tree(f: Callable[..., Any], *xs: Any) -> Any:
    """``f`` on arrays, entry by entry on tuples of them."""
    if isinstance(xs[0], tuple):
        return tuple(f(*entries) for entries in zip(*xs))
    return f(*xs)


@hookimpl
def invad_backends() -> list[Backend]:
    return [AutogradBackend()]

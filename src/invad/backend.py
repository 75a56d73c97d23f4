"""What a backend is: the class a plugin subclasses and returns from ``invad_backends``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any, ClassVar, NamedTuple

import array_api_compat
import numpy as np

from .rules import Linalg, Rule, _linalg
from .rules._rule import ZERO_PIVOT


class Derivatives(NamedTuple):
    """A backend's own ``ops.jvp`` and ``ops.vjp`` of one op (:meth:`Backend.derivatives`).

    ``jvp(primals, tangents, params)`` and ``vjp(primals, cotangents, params)`` take
    what :meth:`invad.ops.Ops.jvp` and :meth:`~invad.ops.Ops.vjp` take (``primals`` and
    ``tangents`` as tuples, the op's keyword parameters as a dict) and return what they
    return.
    """

    jvp: Callable[[tuple[Any, ...], tuple[Any, ...], dict[str, Any]], tuple[Any, Any]]
    vjp: Callable[[tuple[Any, ...], Any, dict[str, Any]], tuple[Any, tuple[Any, ...]]]


class Backend:
    """One array framework, as invad installs into it.

    Subclasses set :attr:`name` and implement :meth:`load`, :meth:`owns`,
    :meth:`namespace` and :attr:`linalg_error`; the rest has defaults that
    suit a CPU-only framework without an AD engine. invad calls
    :meth:`load` once, then everything else is called at install time only,
    except :meth:`owns` (top-level dispatch, cached per array type) and the
    error and device checks below, which run on each call of an op.
    """

    #: The name users pass to ``invad.install(backend=...)``.
    name: ClassVar[str]
    #: True when :meth:`native_op` installs the ops into the framework's own AD.
    native_ad: ClassVar[bool] = False
    #: False for frameworks that cannot raise on values (JAX traces): singular
    #: input then gives the framework's non-finite results, and ``_ex`` ops say where.
    raises_on_singular: ClassVar[bool] = True
    #: How error messages name this backend's arrays (``"numpy.ndarray"``, ``"torch.Tensor"``).
    array_type: ClassVar[str] = "its own arrays"
    #: The top-level modules that :meth:`load` imports (``("torch",)``). Optional: with
    #: them, invad tells whether the framework is installed without importing it (an
    #: error message that lists the backends then loads none of them).
    requires: ClassVar[tuple[str, ...]] = ()

    def load(self) -> None:
        """Import the framework; raise (ImportError, RuntimeError, ...) if it cannot be used.

        Called once. The exception's message is what ``invad backends`` shows
        as the reason the backend is unavailable.
        """
        raise NotImplementedError

    def version(self) -> str | None:
        """The framework's version, after :meth:`load`."""
        return None

    def owns(self, x: Any) -> bool:
        """Whether ``x`` is an array of this framework. Must not import the framework."""
        raise NotImplementedError

    def accept(self, op: str, names: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """The inputs of one op call as this backend's arrays, or ``TypeError``.

        Called on each op call, before the rule's checks. By default every
        input must be owned (:meth:`owns`): another framework's array, a list
        or a Python scalar raises ``TypeError`` naming :attr:`array_type`. A
        backend whose framework converts some inputs itself (NumPy takes lists,
        JAX takes NumPy arrays) converts them here.
        """
        for name, x in zip(names, args):
            if not self.owns(x):
                raise TypeError(not_accepted(self, op, name, x))
        return tuple(args)

    def adopt(self, x: Any, like: Any) -> Any:
        """A NumPy array met next to ``like`` (top-level dispatch), as this backend's array.

        ``invad.solve(numpy_a, torch_b)`` goes to torch with ``numpy_a``
        converted here, onto ``like``'s device, as the framework would convert it.
        """
        return self.from_numpy(x, self.device_of(like))

    def namespace(self) -> Any:
        """The framework's array API namespace (usually from ``array_api_compat``)."""
        raise NotImplementedError

    @property
    def linalg_error(self) -> type[Exception]:
        """The exception type the framework raises for a singular matrix."""
        raise NotImplementedError

    def devices(self) -> Sequence[str]:
        """Names of the devices this backend can place arrays on."""
        return ("cpu",)

    def resolve_device(self, device: Any) -> Any:
        """The device object for ``install(device=...)``; ``None`` means the default.

        Raise ``ValueError`` for a device this backend cannot use.
        """
        if device not in (None, "cpu"):
            raise ValueError(f"backend {self.name!r} has only the device 'cpu'; got {device!r}")
        return "cpu"

    def device_of(self, x: Any) -> Any:
        """The device ``x`` lives on; ``None`` when unknown (JAX tracers), which skips the check."""
        return array_api_compat.device(x)

    def on_device_of(self, x: Any) -> AbstractContextManager[Any]:
        """The context in which invad computes on ``x``; entered around ``ops.jvp`` and ``ops.vjp``.

        For a framework with a *current device* (CuPy), it makes ``x``'s device
        current, so that what is computed and created lands next to ``x``. By
        default it does nothing: most frameworks place results by their inputs.
        """
        return nullcontext()

    def kernels(self, device: Any) -> Any:
        """Optional native kernels: an object with any of ``lu_factor``, ``lu_solve``, ``inv``.

        Their contracts are in :mod:`invad.rules._linalg`. Whatever is missing
        falls back to portable array-API kernels. The default is those portable
        kernels with NumPy's floating-point warnings off (:class:`PortableKernels`).
        """
        return PortableKernels(self.namespace())

    def readable(self, arrays: Sequence[Any]) -> bool:
        """Whether the values of ``arrays`` can be read now, for ``Rule.check_values``: true
        for eager arrays (the default), false for traced or lazy ones (JAX under ``jit``,
        torch under ``torch.func`` transforms, Dask)."""
        return True

    def raise_if_singular(
        self, op: str, shape: tuple[int, ...], info: Any, what: str = ZERO_PIVOT
    ) -> None:
        """Raise :attr:`linalg_error` if ``info`` flags a singular matrix.

        The message names the op, the shape and the first singular batch
        index, and says what ``info = k`` means: ``what`` is the rule's
        ``Rule.zero_pivot(params)``, a format string (see ``ZERO_PIVOT``).
        Does nothing where :attr:`raises_on_singular` is false.
        """
        if not self.raises_on_singular:
            return
        xp = self.namespace()
        if info.size == 0 or not bool(xp.any(info != 0)):
            return
        index = tuple(int(i[0]) for i in xp.nonzero(info != 0)) if info.ndim else ()
        k = int(info[index]) if index else int(info)
        raise self.linalg_error(singular_message(op, shape, index, k, what))

    def native_op(
        self, rule: Rule, la: Linalg, functional: Callable[..., Any]
    ) -> Callable[..., Any] | None:
        """The native AD hook: turn ``rule`` into a callable of the framework's AD system.

        ``functional`` is the plain op invad built from the rule (checks,
        primal, singular error); a native op usually wraps the same steps in
        the framework's custom-derivative machinery. Return ``None`` to install
        ``functional`` as it is (frameworks without AD).
        """
        return None

    def derivatives(self, rule: Rule, la: Linalg) -> Derivatives | None:
        """This backend's own ``ops.jvp`` and ``ops.vjp`` of ``rule``, or ``None`` (the default).

        By default :class:`~invad.ops.Ops` runs the rule's primal and then its
        ``jvp`` or ``vjp`` with the kernels, eagerly. A backend whose arrays are
        lazy (Dask) returns :class:`Derivatives` that build the same computation
        as a graph instead, with the same arguments, checks and results. Called
        once per rule, at install time.
        """
        return None

    def native_jvp(
        self, fn: Callable[..., Any], primals: tuple[Any, ...], tangents: tuple[Any, ...]
    ) -> Any:
        """The output tangent of ``fn`` through the framework's own forward mode.

        Only the conformance kit calls it, to check the installed native ops
        against the rules (``ops.jvp``). ``None``, the default, skips that check.
        """
        return None

    def native_vjp(self, fn: Callable[..., Any], primals: tuple[Any, ...], cotangent: Any) -> Any:
        """The input cotangents of ``fn`` through the framework's own reverse mode.

        In the adjoint convention ``Re tr(X^H Y)`` (conjugate a linear
        transpose such as JAX's). Only the conformance kit calls it; ``None``,
        the default, skips that check.
        """
        return None

    def to_numpy(self, x: Any) -> Any:
        """A NumPy copy of ``x`` on the host (used by the conformance checks)."""
        import numpy as np

        return np.asarray(x)

    def from_numpy(self, x: Any, device: Any) -> Any:
        """An array of this framework on ``device`` from a NumPy array (conformance checks)."""
        return self.namespace().asarray(x, device=device)


def singular_message(
    op: str, shape: tuple[int, ...], index: tuple[int, ...], k: int, what: str = ZERO_PIVOT
) -> str:
    """The singular-matrix error's message for ``info = k`` at batch ``index`` (none for one
    matrix): ``what`` (the rule's ``Rule.zero_pivot(params)``, see ``ZERO_PIVOT``) formatted."""
    where = f" at batch index {index}" if index else ""
    return f"invad.{op}: " + what.format(where=where, shape=tuple(shape), k=k - 1, order=k)


class PortableKernels:
    """invad's portable array-API kernels (``portable_<name>`` in :mod:`invad.rules._linalg`)
    over ``xp``, run with NumPy's floating-point warnings off.

    A singular matrix makes the portable LU divide by its zero pivot on purpose:
    ``info`` says where, and the ops that raise do so with ``LinAlgError``. On a
    namespace that computes with NumPy (array-api-strict, say) every such division
    would also print a ``RuntimeWarning``. ``numpy.errstate`` holds for the current
    thread and context only, so the caller's own NumPy settings are untouched, and
    it does nothing for frameworks that are not NumPy.
    """

    def __init__(self, xp: Any) -> None:
        self.xp = xp

    def __getattr__(self, name: str) -> Callable[..., Any]:
        portable = getattr(_linalg, f"portable_{name}", None) if not name.startswith("_") else None
        if portable is None:
            raise AttributeError(name)  # no portable kernel: Linalg builds its own fallback
        xp = self.xp

        def kernel(*args: Any, **kwargs: Any) -> Any:
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                return portable(xp, *args, **kwargs)

        kernel.__name__ = kernel.__qualname__ = name
        return kernel


def type_name(x: Any) -> str:
    """``numpy.ndarray``, ``torch.Tensor``, ``list``: a value's type as users write it."""
    cls = type(x)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def not_accepted(backend: Backend, op: str, name: str, x: Any) -> str:
    return (
        f"invad.{op}: `{name}` is a {type_name(x)}; the {backend.name!r} backend takes "
        f"{backend.array_type}"
    )

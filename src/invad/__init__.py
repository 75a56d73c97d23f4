"""invad: AD rules for dense linear-system primitives, once, for every array framework.

>>> import numpy as np, invad
>>> ops = invad.install()                 # the embedded NumPy default
>>> a = np.array([[2.0, 1.0], [1.0, 3.0]])
>>> ops.solve(a, np.array([1.0, 2.0]))
array([0.2, 0.6])
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Import the subpackage `invad.backends` before defining the function `backends`
# below: a first import of the subpackage later on would rebind the name.
from . import backends as _builtin_backends  # noqa: F401
from ._listing import backends, rules
from .backend import Backend
from .errors import BackendNotFoundError
from .ops import Ops
from .registry import REGISTRY, BackendInfo
from .rules import RULES, Contract

#: The version, written here only: pyproject.toml reads it (setuptools `attr`).
__version__ = "0.1.0"

DEFAULT_BACKEND = "numpy"

_installed: dict[tuple[str, Any], Ops] = {}
_ops_by_type: dict[type, Ops] = {}


def install(backend: str | None = None, *, device: Any = None) -> Ops:
    """Install invad's ops into ``backend`` (default ``"numpy"``) and return them.

    ``device`` says where arrays that the backend creates go (``None``: the
    framework's default). Installing the same backend and device again
    returns the same :class:`Ops`. Raises :class:`BackendNotFoundError` for an
    unknown or unavailable backend.
    """
    name = DEFAULT_BACKEND if backend is None else backend
    impl = REGISTRY.backend(name)
    resolved = impl.resolve_device(device)
    key = (name, _device_key(resolved))
    ops = _installed.get(key)
    if ops is None:
        with REGISTRY.lock:  # one Ops per backend and device, however many threads ask
            ops = _installed.get(key)
            if ops is None:
                ops = _installed[key] = Ops(impl, resolved)
    return ops


def _device_key(device: Any) -> Any:
    try:
        hash(device)
    except TypeError:
        return repr(device)
    return device


#: Inputs that belong to no framework: numpy.linalg converts them, others refuse them.
_PLAIN = (list, tuple, int, float, complex)


def _ops_for(arrays: tuple[Any, ...]) -> tuple[Ops, Any]:
    """The ops of the first array's backend that is not the NumPy default, else NumPy's,
    and that array (``None`` for NumPy).

    A NumPy constant next to a framework's array (a traced value, say) goes
    to that framework, whichever argument it is. Lists and Python scalars
    choose nothing: alone they go to NumPy, which converts them.
    """
    chosen, like = None, None
    for x in arrays:
        if isinstance(x, _PLAIN):
            continue
        ops = _ops_by_type.get(type(x))
        if ops is None:
            ops = _ops_by_type[type(x)] = install(REGISTRY.owner_of(x).name)
        if chosen is None or chosen.name == DEFAULT_BACKEND:
            chosen, like = ops, x
    if chosen is None:
        return install(), None
    return chosen, (None if chosen.name == DEFAULT_BACKEND else like)


def _dispatching(name: str) -> Any:
    rule = RULES[name]
    inputs = rule.contract.inputs

    def op(*args: Any, **kwargs: Any) -> Any:
        args = args[: len(inputs)] + tuple(
            kwargs.pop(i) for i in inputs[len(args) :] if i in kwargs
        )
        ops, like = _ops_for(args)
        if like is not None and any(type(x) is np.ndarray for x in args):
            # NumPy operands join the other framework's array, on its device.
            args = tuple(ops.backend.adopt(x, like) if type(x) is np.ndarray else x for x in args)
        return getattr(ops, name)(*args, **kwargs)

    op.__name__ = op.__qualname__ = name
    op.__doc__ = (
        f"{rule.contract.summary}\n\nDispatches on the types of {', '.join(inputs)}: to the "
        "backend of the first one that is not a NumPy array, else to NumPy."
    )
    op.__signature__ = rule.signature  # type: ignore[attr-defined]
    return op


inv = _dispatching("inv")
inv_ex = _dispatching("inv_ex")
solve = _dispatching("solve")
solve_ex = _dispatching("solve_ex")
tensorinv = _dispatching("tensorinv")
tensorsolve = _dispatching("tensorsolve")
lu_factor = _dispatching("lu_factor")
lu_factor_ex = _dispatching("lu_factor_ex")
lu_solve = _dispatching("lu_solve")
solve_triangular = _dispatching("solve_triangular")
det = _dispatching("det")
slogdet = _dispatching("slogdet")
cholesky = _dispatching("cholesky")
cholesky_ex = _dispatching("cholesky_ex")
cholesky_solve = _dispatching("cholesky_solve")

__all__ = [
    "Backend",
    "BackendInfo",
    "BackendNotFoundError",
    "Contract",
    "Ops",
    "backends",
    "cholesky",
    "cholesky_ex",
    "cholesky_solve",
    "det",
    "install",
    "inv",
    "inv_ex",
    "lu_factor",
    "lu_factor_ex",
    "lu_solve",
    "rules",
    "slogdet",
    "solve",
    "solve_ex",
    "solve_triangular",
    "tensorinv",
    "tensorsolve",
]

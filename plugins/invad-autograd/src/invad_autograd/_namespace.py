"""The array namespace that invad's rules see under autograd, and small helpers.

:data:`NAMESPACE` holds exactly the array-API functions the rules call, as
functions autograd can trace, so that the rules' ``jvp`` and ``vjp`` are
themselves differentiable (see :mod:`invad_autograd._native`).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import array_api_compat.numpy
import autograd.numpy as anp
import numpy as np
from autograd.extend import defjvp, defvjp, primitive
from autograd.numpy.numpy_boxes import ArrayBox
from autograd.tracer import getval

#: array_api_compat's NumPy namespace (its functions are made at import: typed as Any).
npx: Any = array_api_compat.numpy

Array = Any

# autograd's boxes answer `shape`, `ndim` and `dtype` as the array API says, but not
# `device`, which invad's rules read to create arrays next to their inputs (an identity
# matrix beside `a`). A boxed array is a NumPy array, on the CPU. (Only where autograd
# has no `device` of its own.)
if not hasattr(ArrayBox, "device"):
    ArrayBox.device = property(lambda self: "cpu")


def is_complex(x: Array) -> bool:
    return np.dtype(x.dtype).kind == "c"


def conj(x: Array | None) -> Array | None:
    """Complex conjugate, differentiable; real arrays and ``None`` unchanged."""
    return anp.conj(x) if x is not None and is_complex(x) else x


def zeros_like(x: Array) -> Array:
    """A zero tangent or cotangent for ``x`` (a plain array, whatever boxes ``x``)."""
    value = getval(x)
    return np.zeros(np.shape(value), dtype=np.result_type(value))


def sum_to(x: Array, shape: tuple[int, ...]) -> Array:
    """``x`` summed over the axes that broadcasting added to reach it from ``shape``."""
    lead = anp.ndim(x) - len(shape)
    if lead:
        x = anp.sum(x, axis=tuple(range(lead)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and anp.shape(x)[i] != 1)
    return anp.sum(x, axis=stretched, keepdims=True) if stretched else x


# -- the array namespace the rules see -------------------------------------------


@primitive
def astype(x: Array, dtype: Any) -> Array:
    """``x`` cast to ``dtype``; a cast from complex to real keeps the real part.

    (``autograd.numpy.astype`` has a VJP but no JVP, and warns on complex to real.)
    """
    if np.iscomplexobj(x) and np.dtype(dtype).kind != "c":
        x = x.real
    return x.astype(dtype)


defvjp(astype, lambda ans, x, dtype: lambda g: astype(g, x.dtype))
defjvp(astype, lambda g, ans, x, dtype: astype(g, dtype))


def matrix_transpose(x: Array) -> Array:
    return anp.swapaxes(x, -1, -2)


@primitive
def square_diagonal(x: Array) -> Array:
    """The main diagonal of square matrices (the last two axes).

    Not ``autograd.numpy.diagonal``: its VJP (``make_diagonal``) builds a real
    array and drops the imaginary part of a complex cotangent.
    """
    return np.diagonal(x, axis1=-2, axis2=-1)


def embed_diagonal(d: Array) -> Array:
    """Square matrices with ``d`` on their diagonal and zeros elsewhere, in ``d``'s dtype:
    the adjoint (and transpose) of :func:`square_diagonal`, traced by autograd."""
    return d[..., None] * np.eye(anp.shape(d)[-1], dtype=d.dtype)


defjvp(square_diagonal, lambda g, ans, x: square_diagonal(g))
defvjp(square_diagonal, lambda ans, x: embed_diagonal)


def _diagonal(x: Array) -> Array:
    """The main diagonal of the last two axes, ``(..., min(m, n))``: that of the leading
    square block."""
    m, n = anp.shape(x)[-2:]
    if m != n:
        k = min(m, n)
        x = x[..., :k, :k]
    return square_diagonal(x)


def _concat(arrays: Any, axis: int = 0) -> Array:
    return anp.concatenate(arrays, axis=axis)


#: Exactly the array-API functions that invad's rules call from their ``primal``,
#: ``jvp`` and ``vjp`` (besides the operators ``@``, ``-``, comparisons and indexing,
#: which autograd's boxes provide), as functions autograd can differentiate. Dtype
#: queries take dtypes, and functions that create arrays from shapes or that only
#: read integer or boolean values (``any``, ``min``, ``zeros_like``) need no derivative.
NAMESPACE = SimpleNamespace(
    # differentiable
    abs=anp.abs,
    astype=astype,
    concat=_concat,
    conj=anp.conj,
    matrix_transpose=matrix_transpose,
    permute_dims=anp.transpose,
    prod=anp.prod,
    real=anp.real,
    reshape=anp.reshape,
    stack=anp.stack,
    sum=anp.sum,
    tril=anp.tril,
    triu=anp.triu,
    where=anp.where,
    linalg=SimpleNamespace(diagonal=_diagonal),
    # no derivative
    any=anp.any,
    argmax=anp.argmax,
    max=anp.max,
    min=anp.min,
    ones_like=anp.ones_like,
    zeros_like=anp.zeros_like,
    arange=npx.arange,
    asarray=npx.asarray,
    eye=npx.eye,
    ones=npx.ones,
    zeros=npx.zeros,
    int32=np.int32,
    int64=np.int64,
    isdtype=npx.isdtype,
    finfo=np.finfo,
    result_type=np.result_type,
)

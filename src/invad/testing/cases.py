"""Inputs for the conformance checks: every op over every shape family, well conditioned.

A case is built in NumPy (the reference side of every check) and moved to
the backend under test by ``Backend.from_numpy``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DTYPES = ("float32", "float64", "complex64", "complex128")


@dataclass(frozen=True)
class Shape:
    """One shape family of one op: the input shapes and the op's keyword parameters."""

    family: str
    shapes: tuple[tuple[int, ...], ...]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        extra = ",".join(f"{k}={v}" for k, v in self.params.items())
        return self.family + (f"[{extra}]" if extra else "")


_INV_SHAPES = (
    Shape("single", ((3, 3),)),
    Shape("batched", ((4, 3, 3),)),
    Shape("batched-2d", ((2, 1, 3, 3),)),
    Shape("empty-batch", ((0, 3, 3),)),
    Shape("empty-matrix", ((2, 0, 0),)),
)

_SOLVE_SHAPES = (
    Shape("single", ((3, 3), (3, 2))),
    Shape("vector", ((3, 3), (3,))),
    Shape("batched", ((4, 3, 3), (4, 3, 2))),
    Shape("batched-vector", ((4, 3, 3), (3,))),
    Shape("broadcast", ((2, 1, 3, 3), (5, 3, 2))),
    Shape("right", ((4, 3, 3), (4, 2, 3)), {"left": False}),
    Shape("right-vector", ((3, 3), (3,)), {"left": False}),
    Shape("right-broadcast", ((3, 3), (2, 4, 3)), {"left": False}),
    Shape("empty-batch", ((0, 3, 3), (0, 3, 2))),
    Shape("empty-matrix", ((2, 0, 0), (2, 0, 1))),
    Shape("empty-rhs", ((3, 3), (3, 0))),
)

#: The rest of the solve grid: left and right x vector and matrix b x batch shapes
#: broadcast on either side or empty. A vector b (b.ndim == 1) is one column (left) or
#: one row (right) against every matrix of a's batch.
SOLVE_GRID = (
    Shape("a-broadcast", ((3, 3), (2, 4, 3, 2))),
    Shape("b-broadcast", ((4, 3, 3), (3, 2))),
    Shape("broadcast-vector", ((2, 1, 3, 3), (3,))),
    Shape("empty-batch-vector", ((0, 3, 3), (3,))),
    Shape("empty-batch-b-broadcast", ((0, 3, 3), (3, 2))),
    Shape("right-single", ((3, 3), (2, 3)), {"left": False}),
    Shape("right-batched-vector", ((4, 3, 3), (3,)), {"left": False}),
    Shape("right-broadcast-vector", ((2, 1, 3, 3), (3,)), {"left": False}),
    Shape("right-b-broadcast", ((4, 3, 3), (2, 3)), {"left": False}),
    Shape("right-both-broadcast", ((2, 1, 3, 3), (5, 2, 3)), {"left": False}),
    Shape("right-empty-batch", ((0, 3, 3), (0, 2, 3)), {"left": False}),
    Shape("right-empty-batch-vector", ((0, 3, 3), (3,)), {"left": False}),
    Shape("right-empty-rhs", ((3, 3), (0, 3)), {"left": False}),
)

_LU_FACTOR_SHAPES = (
    Shape("single", ((4, 4),)),
    Shape("batched", ((3, 4, 4),)),
    Shape("wide", ((3, 5),)),
    Shape("tall", ((5, 3),)),
    Shape("batched-wide", ((2, 3, 5),)),
    Shape("batched-tall", ((2, 5, 3),)),
    Shape("empty-batch", ((0, 3, 3),)),
    Shape("empty-matrix", ((2, 0, 0),)),
    Shape("no-columns", ((3, 0),)),
)

#: lu_solve's cases: the solve families, on the factor of ``a`` (made by the backend
#: under test, so that its pivots are in that backend's convention), plus the adjoints.
_LU_SOLVE_SHAPES = (
    *_SOLVE_SHAPES,
    Shape("adjoint", ((4, 3, 3), (4, 3, 2)), {"adjoint": True}),
    Shape("adjoint-vector", ((3, 3), (3,)), {"adjoint": True}),
    Shape("right-adjoint", ((3, 3), (2, 4, 3)), {"left": False, "adjoint": True}),
    Shape("right-adjoint-vector", ((2, 3, 3), (3,)), {"left": False, "adjoint": True}),
)

_TRIANGULAR_SHAPES = (
    Shape("upper", ((3, 3), (3, 2)), {"upper": True}),
    Shape("lower-batched", ((4, 3, 3), (4, 3, 2)), {"upper": False}),
    Shape("upper-vector", ((4, 3, 3), (3,)), {"upper": True}),
    Shape("lower-broadcast", ((2, 1, 3, 3), (5, 3, 2)), {"upper": False}),
    Shape("right-upper", ((4, 3, 3), (4, 2, 3)), {"upper": True, "left": False}),
    Shape("right-lower-vector", ((3, 3), (3,)), {"upper": False, "left": False}),
    Shape("unit-upper", ((4, 3, 3), (4, 3, 2)), {"upper": True, "unitriangular": True}),
    Shape(
        "unit-lower-right",
        ((3, 3), (2, 4, 3)),
        {"upper": False, "left": False, "unitriangular": True},
    ),
    Shape("empty-batch", ((0, 3, 3), (0, 3, 2)), {"upper": True}),
    Shape("empty-matrix", ((2, 0, 0), (2, 0, 1)), {"upper": False}),
)

_DET_SHAPES = (
    Shape("single", ((3, 3),)),
    Shape("batched", ((4, 3, 3),)),
    Shape("batched-2d", ((2, 1, 4, 4),)),
    Shape("one-by-one", ((2, 1, 1),)),
    Shape("empty-batch", ((0, 3, 3),)),
    Shape("empty-matrix", ((2, 0, 0),)),
)

_POS = {"assume_a": "pos"}

#: solve(assume_a="pos"): Hermitian positive-definite a, Cholesky instead of LU.
SOLVE_POS = (
    Shape("pos", ((4, 3, 3), (4, 3, 2)), _POS),
    Shape("pos-vector", ((3, 3), (3,)), _POS),
    Shape("pos-broadcast", ((2, 1, 3, 3), (5, 3, 2)), _POS),
    Shape("pos-right", ((4, 3, 3), (4, 2, 3)), {"left": False, **_POS}),
    Shape("pos-empty-batch", ((0, 3, 3), (0, 3, 2)), _POS),
)

_CHOLESKY_SHAPES = (
    Shape("single", ((3, 3),)),
    Shape("batched", ((4, 3, 3),)),
    Shape("upper", ((4, 3, 3),), {"upper": True}),
    Shape("batched-2d", ((2, 1, 4, 4),)),
    Shape("empty-batch", ((0, 3, 3),)),
    Shape("empty-matrix", ((2, 0, 0),)),
)

_CHOLESKY_SOLVE_SHAPES = (
    Shape("single", ((3, 3), (3, 2))),
    Shape("vector", ((3, 3), (3,))),
    Shape("batched", ((4, 3, 3), (4, 3, 2))),
    Shape("broadcast", ((2, 1, 3, 3), (5, 3, 2))),
    Shape("upper", ((4, 3, 3), (4, 3, 2)), {"upper": True}),
    Shape("upper-vector", ((2, 3, 3), (3,)), {"upper": True}),
    Shape("empty-batch", ((0, 3, 3), (0, 3, 2))),
    Shape("empty-matrix", ((2, 0, 0), (2, 0, 1))),
    Shape("empty-rhs", ((3, 3), (3, 0))),
)

SHAPES: dict[str, tuple[Shape, ...]] = {
    "inv": _INV_SHAPES,
    "inv_ex": _INV_SHAPES,
    "solve": _SOLVE_SHAPES + SOLVE_GRID + SOLVE_POS,
    "solve_ex": _SOLVE_SHAPES + SOLVE_GRID + SOLVE_POS,
    "tensorinv": (
        Shape("matrix", ((4, 4),), {"ind": 1}),
        Shape("3d", ((2, 3, 6),), {"ind": 2}),
        Shape("4d", ((4, 6, 8, 3),), {"ind": 2}),
        Shape("ind-1", ((6, 2, 3),), {"ind": 1}),
        Shape("empty", ((0, 0),), {"ind": 1}),
    ),
    "tensorsolve": (
        Shape("matrix", ((4, 4), (4,))),
        Shape("3d", ((2, 3, 6), (2, 3))),
        Shape("axes", ((6, 2, 3), (2, 3)), {"axes": (0,)}),
        Shape("4d", ((2, 3, 2, 3), (2, 3))),
        Shape("empty", ((0, 0), (0,))),
    ),
    "lu_factor": _LU_FACTOR_SHAPES,
    "lu_factor_ex": _LU_FACTOR_SHAPES,
    "lu_solve": _LU_SOLVE_SHAPES,
    "solve_triangular": _TRIANGULAR_SHAPES,
    "det": _DET_SHAPES,
    "slogdet": _DET_SHAPES,
    "cholesky": _CHOLESKY_SHAPES,
    "cholesky_ex": _CHOLESKY_SHAPES,
    "cholesky_solve": _CHOLESKY_SOLVE_SHAPES,
}


def hermitian_inputs(op: str, params: dict[str, Any]) -> tuple[int, ...]:
    """The inputs that are Hermitian matrices, whose tangents are Hermitian too: the op is a
    function of Hermitian matrices (it reads one triangle, its cotangent is Hermitian)."""
    if op in ("cholesky", "cholesky_ex") or params.get("assume_a") == "pos":
        return (0,)
    return ()


def hermitian(x: np.ndarray) -> np.ndarray:
    return ((x + np.conj(np.swapaxes(x, -1, -2))) / 2).astype(x.dtype)


def positive_definite(
    rng: np.random.Generator, batch: tuple[int, ...], n: int, dtype: str
) -> np.ndarray:
    """Hermitian ``I + G G^H / n``: eigenvalues between 1 and a few units."""
    g = random_array(rng, (*batch, n, n), dtype)
    return hermitian(np.eye(n, dtype=dtype) + g @ np.conj(np.swapaxes(g, -1, -2)) / max(n, 1))


def random_array(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    x = rng.standard_normal(shape)
    if dtype.startswith("complex"):
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


def well_conditioned(
    rng: np.random.Generator, batch: tuple[int, ...], n: int, dtype: str
) -> np.ndarray:
    """Matrices ``2 I + N / sqrt(n)``: eigenvalues near 2, condition numbers of a few units."""
    noise = random_array(rng, (*batch, n, n), dtype) / math.sqrt(max(n, 1))
    return (2 * np.eye(n, dtype=dtype) + noise).astype(dtype)


def well_conditioned_rectangular(
    rng: np.random.Generator, shape: tuple[int, ...], dtype: str
) -> np.ndarray:
    """``2 I + N / sqrt(k)`` with ``I`` the ``(m, n)`` identity: its LU is well conditioned."""
    m, n = shape[-2:]
    noise = random_array(rng, shape, dtype) / math.sqrt(max(min(m, n), 1))
    return (2 * np.eye(m, n, dtype=dtype) + noise).astype(dtype)


def triangular(
    rng: np.random.Generator, shape: tuple[int, ...], dtype: str, params: dict[str, Any]
) -> np.ndarray:
    """A well-conditioned triangle, with large values where the op must not read:
    the other triangle (and the diagonal, if ``unitriangular``)."""
    n = shape[-1]
    a = well_conditioned(rng, shape[:-2], n, dtype)
    keep = np.triu(np.ones((n, n), bool)) if params["upper"] else np.tril(np.ones((n, n), bool))
    if params.get("unitriangular"):
        keep &= ~np.eye(n, dtype=bool)
    return np.where(keep, a, 50 * random_array(rng, shape, dtype)).astype(dtype)


def primals(op: str, shape: Shape, dtype: str, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Inputs of ``op`` for one shape family; every matrix involved is well conditioned.

    For ``lu_solve`` these are ``(a, b)``: the conformance checks factor ``a``
    with the backend under test, whose pivots are in its own convention.
    """
    if hermitian_inputs(op, shape.params):
        a_shape = shape.shapes[0]
        a = positive_definite(rng, a_shape[:-2], a_shape[-1], dtype)
        return (a, *(random_array(rng, s, dtype) for s in shape.shapes[1:]))
    if op == "cholesky_solve":
        a_shape, b_shape = shape.shapes
        c = np.linalg.cholesky(positive_definite(rng, a_shape[:-2], a_shape[-1], dtype))
        if shape.params.get("upper"):
            c = np.conj(np.swapaxes(c, -1, -2))
        return c.astype(dtype), random_array(rng, b_shape, dtype)
    if op in ("inv", "inv_ex", "solve", "solve_ex", "lu_solve", "det", "slogdet"):
        a_shape = shape.shapes[0]
        a = well_conditioned(rng, a_shape[:-2], a_shape[-1], dtype)
        return (a, *(random_array(rng, s, dtype) for s in shape.shapes[1:]))
    if op in ("lu_factor", "lu_factor_ex"):
        return (well_conditioned_rectangular(rng, shape.shapes[0], dtype),)
    if op == "solve_triangular":
        a = triangular(rng, shape.shapes[0], dtype, shape.params)
        return a, random_array(rng, shape.shapes[1], dtype)
    if op == "tensorinv":
        (a_shape,) = shape.shapes
        p = math.prod(a_shape[: shape.params["ind"]])
        return (well_conditioned(rng, (), p, dtype).reshape(a_shape),)
    if op == "tensorsolve":
        a_shape, b_shape = shape.shapes
        axes = shape.params.get("axes") or ()
        perm = [i for i in range(len(a_shape)) if i not in axes] + list(axes)
        permuted_shape = tuple(a_shape[i] for i in perm)
        m = well_conditioned(rng, (), math.prod(b_shape), dtype).reshape(permuted_shape)
        a = np.transpose(m, np.argsort(perm))
        return a, random_array(rng, b_shape, dtype)
    raise ValueError(f"no cases for op {op!r}")

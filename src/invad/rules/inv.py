"""The inverse family: ``inv``, ``inv_ex`` and ``tensorinv``.

With ``B = A^-1``::

    forward        B = A^-1
    linearization  dB = -B dA B
    adjoint        Abar = -B^H Bbar B^H

``tensorinv`` is the same rule on the matrix that NumPy's index reshape makes.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ._linalg import Array, Linalg, cotangent_for, mH
from ._rule import Contract, Param, Primal, Rule, check_dtype, check_square

# ---------------------------------------------------------------------------
# inv
# ---------------------------------------------------------------------------


class InvResiduals(NamedTuple):
    inverse: Array


def _check_inv(xp: Any, op: str, a: Array) -> None:
    check_dtype(xp, op, a=a)
    check_square(op, a)


def _inv_primal(la: Linalg, a: Array) -> Primal:
    inverse, info = la.inv(a)
    return Primal(inverse, info, InvResiduals(inverse))


def _inv_jvp(la: Linalg, res: InvResiduals, tangents: tuple[Array | None]) -> Array | None:
    (da,) = tangents
    if da is None:
        return None
    B = res.inverse
    return -(B @ da @ B)


def _inv_vjp(
    la: Linalg, res: InvResiduals, Bbar: Array, needs: tuple[bool, ...] = (True,)
) -> tuple[Array | None]:
    Bh = mH(la.xp, res.inverse)
    return (cotangent_for(la.xp, -(Bh @ Bbar @ Bh), res.inverse),)


_SQUARE_BATCH = (
    "a: (..., n, n), any number of leading batch dimensions; the result has a's shape. "
    "Zero-size batches and n = 0 give empty results."
)

INV = Rule(
    contract=Contract(
        name="inv",
        summary="Inverse of a square matrix or a batch of them.",
        inputs=("a",),
        outputs=("inverse",),
        differentiable_outputs=("inverse",),
        params=(),
        forward="B = A^-1",
        linearization="dB = -B dA B",
        adjoint="Abar = -B^H Bbar B^H",
        transpose="Abar = -B^T Bbar B^T",
        domain="a nonsingular",
        singular=(
            "Raises the framework's LinAlgError naming the op, the shape and the first "
            "singular batch index (under JAX tracing: JAX's non-finite values)."
        ),
        shapes=_SQUARE_BATCH,
    ),
    check=_check_inv,
    primal=_inv_primal,
    jvp=_inv_jvp,
    vjp=_inv_vjp,
    residuals=InvResiduals,
)

INV_EX = INV.with_info("inv_ex", "Inverse with LAPACK-style `info` instead of an error.")

# ---------------------------------------------------------------------------
# tensorinv: inv of the (prod(shape[:ind]), prod(shape[ind:])) matrix
# ---------------------------------------------------------------------------


def _check_tensorinv(xp: Any, op: str, a: Array, *, ind: int = 2) -> None:
    check_dtype(xp, op, a=a)
    if not isinstance(ind, int) or isinstance(ind, bool) or not 0 < ind < max(a.ndim, 1):
        raise ValueError(
            f"invad.{op}: `ind` must be an integer with 0 < ind < a.ndim; got ind={ind!r} "
            f"for `a` of shape {tuple(a.shape)}"
        )
    rows, cols = math.prod(a.shape[:ind]), math.prod(a.shape[ind:])
    if rows != cols:
        raise ValueError(
            f"invad.{op}: `a` of shape {tuple(a.shape)} is not 'square' for ind={ind}: "
            f"prod(a.shape[:ind]) = {rows} but prod(a.shape[ind:]) = {cols}"
        )


def _as_matrix(la: Linalg, t: Array, split: int) -> Array:
    """The matrix whose rows are indexed by ``t.shape[:split]``."""
    m = math.prod(t.shape[:split])
    return la.xp.reshape(t, (m, m))


def _tensorinv_primal(la: Linalg, a: Array, *, ind: int = 2) -> Primal:
    inverse, info = la.inv(_as_matrix(la, a, ind))
    value = la.xp.reshape(inverse, (*a.shape[ind:], *a.shape[:ind]))
    return Primal(value, info, InvResiduals(inverse))


def _tensorinv_jvp(
    la: Linalg, res: InvResiduals, tangents: tuple[Array | None], *, ind: int = 2
) -> Array | None:
    (da,) = tangents
    if da is None:
        return None
    dB = _inv_jvp(la, res, (_as_matrix(la, da, ind),))
    return la.xp.reshape(dB, (*da.shape[ind:], *da.shape[:ind]))


def _tensorinv_vjp(
    la: Linalg, res: InvResiduals, Bbar: Array, needs: tuple[bool, ...] = (True,), *, ind: int = 2
) -> tuple[Array | None]:
    out_split = Bbar.ndim - ind  # the result's shape is a.shape[ind:] + a.shape[:ind]
    (Abar,) = _inv_vjp(la, res, _as_matrix(la, Bbar, out_split))
    return (la.xp.reshape(Abar, (*Bbar.shape[out_split:], *Bbar.shape[:out_split])),)


TENSORINV = Rule(
    contract=Contract(
        name="tensorinv",
        summary="Inverse of an N-d array for tensordot, as numpy.linalg.tensorinv.",
        inputs=("a",),
        outputs=("inverse",),
        differentiable_outputs=("inverse",),
        params=(Param("ind", 2, "number of leading indices that form the rows of the matrix"),),
        forward="B = reshape(inv(reshape(A, (P, P))), a.shape[ind:] + a.shape[:ind])",
        linearization="dB = -B dA B on the reshaped matrices",
        adjoint="Abar = -B^H Bbar B^H on the reshaped matrices",
        transpose="Abar = -B^T Bbar B^T on the reshaped matrices",
        domain="prod(a.shape[:ind]) == prod(a.shape[ind:]) = P, the P x P matrix nonsingular",
        singular=INV.contract.singular,
        shapes="No batch dimensions: every index of `a` belongs to the matrix (NumPy's rule).",
        batched=False,
    ),
    check=_check_tensorinv,
    primal=_tensorinv_primal,
    jvp=_tensorinv_jvp,
    vjp=_tensorinv_vjp,
    residuals=InvResiduals,
)

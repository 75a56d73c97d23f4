"""The kernels the rules run on under JAX: LU, solves, row interchanges, determinants.

Everything here is traceable and differentiable by JAX itself, which is what
makes every order work: a rule's JVP calls these kernels, JAX transposes that
JVP for reverse mode, and differentiates it (kernels included) for the next
order.

- ``lu_factor``: ``jax.lax.linalg.lu`` (LAPACK ``getrf`` on CPU), square or
  rectangular. ``Factor.pivots`` are its row interchanges, 0-based int32, as
  ``jax.scipy.linalg.lu_factor`` returns them. The factor is differentiable
  (JAX's own LU derivative): ``lu_factor``'s and ``det``'s derivatives read
  it, and their next order differentiates it.
- ``lu_solve`` with the matrix (``Factor.a``, the solves of ``solve``, ``inv``
  and the determinants) is two triangular solves wrapped in
  ``jax.lax.custom_linear_solve``, as ``jnp.linalg.solve`` does: reverse mode
  then solves the transposed system with the same factorization instead of
  transposing a row gather into a scatter, and the derivative with respect to
  the matrix (next order) is implicit differentiation through ``a``, not the
  derivative of the LU factorization. Without the matrix (``lu_solve``'s
  user-given factor) it is the two triangular solves themselves, which JAX
  differentiates with respect to the factor.
- The interchanges become a permutation with
  ``jax.lax.linalg.lu_pivots_to_permutation``, the loop that ``lu`` itself
  runs on CPU: in one compiled program XLA computes it once.
- ``det``'s value is a ``custom_jvp`` whose derivative is the det rule's
  own: the rule's derivatives read the value, and at the next order JAX would
  otherwise differentiate it through the LU, which divides by the pivots
  (0/0 at an exact zero: NaN where the adjugate is finite). ``constant`` is
  ``lax.stop_gradient``.
- ``if_any`` is ``lax.cond``: the rare branch (``det`` at singular matrices)
  costs nothing at run time unless a batch element takes it.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

import array_api_compat.numpy
import numpy as np

from ...rules import CholeskyFactor, Factor
from ...rules._linalg import det_of_lu, portable_check_pivots, slogdet_of_lu
from .mesh import same_batch_sharding, same_varying_axes


class JaxKernels:
    """The rules' kernels over JAX arrays (tracers included), traceable and differentiable."""

    #: ``Factor.pivots`` count rows from 0, as ``jax.scipy.linalg.lu_factor``'s do.
    pivot_base = 0

    def __init__(self) -> None:
        import jax
        import jax.numpy as jnp

        self._jnp = jnp
        self._lax = jax.lax
        # The permutation that lax.linalg.lu computed with each pivots array this object
        # returned, by id(pivots): (a weak reference to the pivots, the permutation).
        self._permutations: dict[int, tuple[Any, Any]] = {}

    # -- factor ---------------------------------------------------------------

    def lu_factor(self, a: Any) -> tuple[Factor, Any]:
        """``a = P L U`` (``getrf``), ``a`` of shape ``(..., m, n)``."""
        jnp, lax = self._jnp, self._lax
        batch, (m, n) = tuple(a.shape[:-2]), a.shape[-2:]
        if a.size == 0:
            pivots = jnp.zeros((*batch, min(m, n)), dtype=jnp.int32)
            return Factor(a, a, pivots), jnp.zeros(batch, dtype=jnp.int32)
        lu, pivots, perm = lax.linalg.lu(a)
        self._remember(pivots, perm)
        return Factor(a, lu, pivots), self._info(lu)

    def _info(self, lu: Any) -> Any:
        """LAPACK's ``info``: the first k with ``U[k-1, k-1] == 0``, else 0, per batch element."""
        jnp = self._jnp
        zero = jnp.diagonal(lu, axis1=-2, axis2=-1) == 0
        first = jnp.argmax(zero, axis=-1).astype(jnp.int32) + 1
        return jnp.where(jnp.any(zero, axis=-1), first, jnp.zeros_like(first))

    def _remember(self, pivots: Any, perm: Any) -> None:
        """Keep ``lu``'s own permutation for these pivots, for as long as they live."""
        key = id(pivots)
        try:
            self._permutations[key] = (weakref.ref(pivots), perm)
            weakref.finalize(pivots, self._permutations.pop, key, None)
        except TypeError:  # an array type without weak references: convert when asked
            pass

    def _permutation(self, pivots: Any, m: int) -> Any:
        """The row interchanges as a permutation ``perm`` of ``m`` rows: ``P^T x = x[perm]``.

        For pivots that :meth:`lu_factor` made, the permutation ``lax.linalg.lu``
        computed with them (same trace, so valid wherever the pivots are): the
        conversion is a loop over the ``n`` interchanges that XLA merges with
        ``lu``'s own only within one computation, and a derivative's ``lax.cond``
        (``det`` at singular matrices) is another one. Other pivots (a user's
        factor) are converted.
        """
        own = self._own_permutation(pivots, m)
        return own if own is not None else self._lax.linalg.lu_pivots_to_permutation(pivots, m)

    def _own_permutation(self, pivots: Any, m: int) -> Any:
        """The permutation of pivots that :meth:`lu_factor` made, or ``None``."""
        entry = self._permutations.get(id(pivots))
        if entry is not None and entry[0]() is pivots and entry[1].shape[-1] == m:
            return entry[1]
        return None

    # -- determinants -----------------------------------------------------------

    def slogdet(self, a: Any) -> tuple[Factor, Any, Any, Any]:
        factor, info = self.lu_factor(a)
        sign, logabsdet = slogdet_of_lu(self._jnp, factor, self.pivot_base)
        return factor, sign, logabsdet, info

    def det(self, a: Any) -> tuple[Factor, Any, Any]:
        factor, info = self.lu_factor(a)
        return factor, self._det_value(a, factor.lu, factor.pivots), info

    def factored_det(self, a: Any, factor: Factor) -> Any:
        """``det(a)`` from ``factor`` (no new LU), differentiated by the det rule."""
        return self._det_value(a, factor.lu, factor.pivots)

    @functools.cached_property
    def _det_value(self) -> Callable[[Any, Any, Any], Any]:
        """``det(a)`` from ``a``'s ``lu`` and ``pivots``, differentiated (at every order) by
        the det rule on these kernels, with respect to ``a`` alone: ``lu`` and ``pivots``
        are values of ``a``, not inputs of their own."""
        import jax

        from ...rules import RULES, Linalg

        rule, base = RULES["det"], self.pivot_base
        la = Linalg.build(self._jnp, self)

        @jax.custom_jvp
        def value(a: Any, lu: Any, pivots: Any) -> Any:
            return det_of_lu(self._jnp, Factor(a, lu, pivots), base)

        @value.defjvp
        def value_jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
            a, lu, pivots = primals
            det = value(a, lu, pivots)
            residuals = rule.residuals(a, lu, pivots, det)
            return det, rule.jvp(la, residuals, (tangents[0],))

        return value

    # -- solves -----------------------------------------------------------------

    def lu_solve(self, factor: Factor, b: Any, trans: str = "N") -> Any:
        """Solve ``op(A) x = b``, batch dimensions of the factor and ``b`` broadcast.

        ``b`` is always a matrix (``(..., n, k)``); the rules make vectors
        into one-column matrices before they get here.
        """
        jnp, lax = self._jnp, self._lax
        if trans not in ("N", "T", "H"):
            raise ValueError(f"invad: trans must be 'N', 'T' or 'H'; got {trans!r}")
        a, lu, pivots = factor
        dtype = jnp.result_type(lu.dtype, b.dtype)
        if lu.dtype != dtype:
            lu = lu.astype(dtype)
        if b.dtype != dtype:
            b = b.astype(dtype)
        n, k = b.shape[-2], b.shape[-1]
        batch = jnp.broadcast_shapes(tuple(lu.shape[:-2]), tuple(b.shape[:-2]))
        b = jnp.broadcast_to(b, (*batch, n, k))
        if b.size == 0:
            return b  # nothing to solve; no dependence on the factor
        perm = jnp.broadcast_to(self._permutation(pivots, n), (*batch, n))
        lu = jnp.broadcast_to(lu, (*batch, n, n))
        if a is None:  # a factor the user gave: JAX differentiates the solves themselves
            lu, perm, b = same_varying_axes(lu, perm, b)
            lu, b, perm = same_batch_sharding(len(batch), (lu, 2), (b, 2), (perm, 1))
            return self._getrs(lu, perm, b, trans)
        a = jnp.broadcast_to(a.astype(dtype) if a.dtype != dtype else a, (*batch, n, n))
        # Inside jax.shard_map every operand of the linear solve must vary over the same
        # mesh axes: an unvarying right-hand side (inv's identity, a replicated b) or an
        # unvarying matrix would make the solve's traced transpose and constants disagree.
        a, lu, perm, b = same_varying_axes(a, lu, perm, b)
        # Under a mesh with Explicit axes, the batch sharding is part of the type: give
        # every operand the batch sharding of the factor (or of b), the matrices whole.
        lu, b, a, perm = same_batch_sharding(len(batch), (lu, 2), (b, 2), (a, 2), (perm, 1))
        forward, backward = {"N": ("N", "T"), "T": ("T", "N"), "H": ("H", "C")}[trans]

        def matvec(x: Any) -> Any:
            if trans == "N":
                return a @ x
            at = jnp.matrix_transpose(a)
            return (jnp.conj(at) if trans == "H" else at) @ x

        return lax.custom_linear_solve(
            matvec,
            b,
            solve=lambda _, rhs: self._getrs(lu, perm, rhs, forward),
            transpose_solve=lambda _, rhs: self._getrs(lu, perm, rhs, backward),
        )

    def _getrs(self, lu: Any, perm: Any, b: Any, trans: str) -> Any:
        """``op(A)^-1 b`` from ``A = P L U``: ``op`` is N, T, H, or C (the conjugate)."""
        jnp, lax = self._jnp, self._lax
        tri = lax.linalg.triangular_solve
        if trans == "C":  # conj(A)^-1 b = conj(A^-1 conj(b))
            return jnp.conj(self._getrs(lu, perm, jnp.conj(b), "N"))
        if trans == "N":
            x = jnp.take_along_axis(b, perm[..., :, None], axis=-2)  # P^T b
            x = tri(lu, x, left_side=True, lower=True, unit_diagonal=True)
            return tri(lu, x, left_side=True, lower=False)
        conj = trans == "H"
        x = tri(lu, b, left_side=True, lower=False, transpose_a=True, conjugate_a=conj)
        x = tri(
            lu,
            x,
            left_side=True,
            lower=True,
            unit_diagonal=True,
            transpose_a=True,
            conjugate_a=conj,
        )
        inverse = jnp.argsort(perm, axis=-1)
        return jnp.take_along_axis(x, inverse[..., :, None], axis=-2)  # P x

    def solve_triangular(
        self, t: Any, b: Any, upper: bool, trans: str = "N", unit: bool = False
    ) -> Any:
        """``op(T)^-1 b`` reading only the triangle ``upper`` names (not its diagonal if
        ``unit``): ``jax.lax.linalg.triangular_solve``, batch dimensions broadcast."""
        jnp = self._jnp
        dtype = jnp.result_type(t.dtype, b.dtype)
        if t.dtype != dtype:
            t = t.astype(dtype)
        if b.dtype != dtype:
            b = b.astype(dtype)
        n = t.shape[-1]
        batch = jnp.broadcast_shapes(tuple(t.shape[:-2]), tuple(b.shape[:-2]))
        b = jnp.broadcast_to(b, (*batch, *b.shape[-2:]))
        if b.size == 0:
            return b
        t = jnp.broadcast_to(t, (*batch, n, n))
        t, b = same_varying_axes(t, b)
        t, b = same_batch_sharding(len(batch), (t, 2), (b, 2))
        return self._lax.linalg.triangular_solve(
            t,
            b,
            left_side=True,
            lower=not upper,
            transpose_a=trans != "N",
            conjugate_a=trans == "H",
            unit_diagonal=unit,
        )

    @staticmethod
    def check_pivots(op: str, pivots: Any, m: int) -> None:
        """The portable check on the host (concrete pivots only: ``Rule.check_values``), one
        copy instead of a dispatch per operation."""
        portable_check_pivots(array_api_compat.numpy, op, np.asarray(pivots), m, 0)

    def permute_rows(self, pivots: Any, x: Any, inverse: bool = False) -> Any:
        """``P^T x`` (the interchanges in order, as LAPACK's ``laswp``), or ``P x``: a gather."""
        jnp = self._jnp
        m = x.shape[-2]
        perm = self._permutation(pivots, m)
        if inverse:
            perm = jnp.argsort(perm, axis=-1)
        batch = jnp.broadcast_shapes(tuple(perm.shape[:-1]), tuple(x.shape[:-2]))
        x = jnp.broadcast_to(x, (*batch, *x.shape[-2:]))
        if x.size == 0:
            return x
        perm = jnp.broadcast_to(perm, (*batch, m))
        x, perm = same_varying_axes(x, perm)
        x, perm = same_batch_sharding(len(batch), (x, 2), (perm, 1))
        out = jnp.take_along_axis(x, perm[..., :, None], axis=-2)
        if self._own_permutation(pivots, m) is not None:
            return out
        # A user's pivots, checked where they are concrete (Rule.check_values) but not
        # under jit: where they are no row interchanges of m rows, NaN, as JAX answers
        # for a singular factor, instead of the rows that XLA's clamped indices pick. A
        # product, not a where: the derivatives through it are NaN there too.
        k = pivots.shape[-1]
        first = jnp.arange(k, dtype=pivots.dtype)
        valid = jnp.all((pivots >= first) & (pivots <= m - 1), axis=-1)
        return out * jnp.where(valid, 1, jnp.nan).astype(out.dtype)[..., None, None]

    # -- Cholesky ---------------------------------------------------------------

    def cholesky(self, a: Any, upper: bool = False) -> tuple[Any, Any]:
        """``jax.lax.linalg.cholesky`` of the one triangle read (``symmetrize_input=False``:
        by default JAX averages both). JAX fills a matrix that is not positive definite
        with NaN, so the order of its failing minor (LAPACK's ``info``) comes from a
        left-looking Cholesky over the batch, run only if some element failed."""
        jnp, lax = self._jnp, self._lax
        m = jnp.conj(jnp.swapaxes(a, -1, -2)) if upper else a  # read its lower triangle
        batch = tuple(a.shape[:-2])
        if a.size == 0:
            return jnp.zeros_like(a), jnp.zeros(batch, dtype=jnp.int32)
        c = lax.linalg.cholesky(self._hermitian_read(m), symmetrize_input=False)
        d = jnp.diagonal(c, axis1=-2, axis2=-1)
        failed = ~jnp.all(jnp.isfinite(d) & (jnp.real(d) > 0), axis=-1)
        info = lax.cond(
            jnp.any(failed),
            lambda: self._potf2_info(m),
            lambda: jnp.zeros(batch, dtype=jnp.int32),
        )
        return (jnp.conj(jnp.swapaxes(c, -1, -2)) if upper else c), info

    @functools.cached_property
    def _hermitian_read(self) -> Callable[[Any], Any]:
        """The identity, whose tangent is the Hermitian part of the input's.

        ``lax.linalg.cholesky`` without ``symmetrize_input`` reads one triangle but
        differentiates along the whole tangent, and its transpose then gives ``a`` a
        cotangent that is not Hermitian: a derivative of the rules' derivatives (a Hessian
        by reverse over reverse) came out skewed. The rules' own first-order derivatives do
        not pass here (``sym(dA)`` is in the rule), so this costs nothing there."""
        import jax

        jnp = self._jnp

        @jax.custom_jvp
        def read(m: Any) -> Any:
            return m

        @read.defjvp
        def read_jvp(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
            (dm,) = tangents
            return primals[0], (dm + jnp.conj(jnp.swapaxes(dm, -1, -2))) / 2

        return read

    def _potf2_info(self, m: Any) -> Any:
        """LAPACK ``potf2``'s ``info`` of the lower triangle of ``m``: the order of the first
        leading minor that is not positive definite (NaN counts), 0 where none."""
        jnp, lax = self._jnp, self._lax
        n = m.shape[-1]
        cols = jnp.arange(n)

        def step(j: Any, state: tuple[Any, Any]) -> tuple[Any, Any]:
            c, info = state
            row = jnp.where(cols < j, c[..., j, :], 0)  # L[j, :j]
            d = jnp.real(m[..., j, j] - jnp.sum(row * jnp.conj(row), axis=-1))
            bad = ~(d > 0)
            info = jnp.where((info == 0) & bad, j + 1, info)
            pivot = jnp.sqrt(jnp.where(bad, 1.0, d)).astype(m.dtype)  # past a failure: any
            below = (m[..., :, j] - (c @ jnp.conj(row)[..., :, None])[..., 0]) / pivot[..., None]
            c = c.at[..., :, j].set(jnp.where(cols > j, below, 0))
            return c.at[..., j, j].set(pivot), info

        start = (jnp.zeros_like(m), jnp.zeros(m.shape[:-2], dtype=jnp.int32))
        return lax.fori_loop(0, n, step, start)[1]

    def cholesky_solve(self, factor: CholeskyFactor, b: Any) -> Any:
        """``A^-1 b`` from ``A = L L^H`` by two triangular solves with the factor."""
        c, upper = factor.c, factor.upper
        if upper:  # A = c^H c
            return self.solve_triangular(c, self.solve_triangular(c, b, True, "H"), True, "N")
        return self.solve_triangular(c, self.solve_triangular(c, b, False, "N"), False, "H")

    # -- inverse --------------------------------------------------------------

    def inv(self, a: Any) -> tuple[Any, Any]:
        jnp = self._jnp
        factor, info = self.lu_factor(a)
        eye = jnp.broadcast_to(jnp.eye(a.shape[-1], dtype=a.dtype), a.shape)
        return self.lu_solve(factor, eye, "N"), info

    # -- control flow ------------------------------------------------------------

    def constant(self, x: Any) -> Any:
        """``Linalg.constant``: ``x`` without derivatives."""
        return self._lax.stop_gradient(x)

    def if_any(self, mask: Any, then: Callable[[], Any], otherwise: Callable[[], Any]) -> Any:
        """``then()`` if any element of ``mask`` is true, else ``otherwise()``: ``lax.cond``,
        so that under ``jit`` only the branch taken runs. An ``otherwise`` that returns None
        ("nothing to add") stands for zeros shaped as ``then()``'s result: a cond has one
        result type."""
        if otherwise() is None:
            import jax

            shapes = jax.eval_shape(then)
            jnp = self._jnp

            def zeros(s: Any) -> Any:
                # Zeros computed from the mask: they take its batch sharding (jit over an
                # Explicit mesh) and the mesh axes it varies over (shard_map), as then()'s
                # results do, which derive from the same values: a cond's branches must agree.
                z = mask.astype(s.dtype) * 0
                trailing = len(s.shape) - z.ndim
                if trailing < 0 or tuple(s.shape[: z.ndim]) != tuple(z.shape):
                    return same_varying_axes(jnp.zeros(s.shape, s.dtype), mask)[0]
                return jnp.broadcast_to(jnp.reshape(z, (*z.shape, *(1,) * trailing)), s.shape)

            def otherwise() -> Any:
                return jax.tree_util.tree_map(zeros, shapes)

        return self._lax.cond(self._jnp.any(mask), then, otherwise)

"""The JAX backend: every op a jitted ``jax.custom_jvp`` whose JVP is the rule's linearization.

Each op is installed as a jitted ``jax.custom_jvp`` function, one per
combination of the op's static parameters (``left``, ``ind``, ``axes``,
``upper``, ...):

- its primal is ``rule.primal``;
- its JVP rule runs ``rule.primal`` and ``rule.jvp``. The linearization is
  linear in the tangents and built only from operations JAX can transpose
  (matmuls, triangular solves, row gathers, the LU solve, ``lax.cond``), so JAX
  derives reverse mode itself, in its own convention (the linear transpose,
  see the docs), and every higher order by differentiating the JVP rule again;
- integer outputs (``lu_factor``'s pivots, the ``_ex`` ops' ``info``) have a
  symbolic-zero (``float0``) tangent, and integer inputs (``lu_solve``'s
  pivots) are never differentiated;
- inside ``jax.shard_map`` (``check_vma=True``) the operands of each solve are
  first cast to vary over the same mesh axes, as ``jnp.linalg.solve`` does, so
  that replicated and sharded inputs mix; under ``jit`` over a mesh with
  ``Explicit`` axes they get one batch sharding, so a sharded batch stays
  sharded (no gather).

Nothing raises on a singular matrix: under tracing nothing can. ``inv``,
``solve``, ``lu_solve`` and ``solve_triangular`` give JAX's non-finite values,
the ``_ex`` ops say where in ``info``; ``det`` is finite there, with the
adjugate as its derivative. jax is imported only in :meth:`JaxBackend.load`.

The package's modules:

- ``backend``: :class:`JaxBackend` and the ``invad_backends`` hook;
- ``op``: the user-facing op (checks, then the jitted ``custom_jvp``);
- ``kernels``: :class:`JaxKernels`, the LU, triangular-solve, row-interchange
  and determinant kernels the rules run on;
- ``mesh``: operands made to agree on a mesh (``shard_map`` varying axes,
  ``Explicit`` batch sharding);
- ``_state``: the jax module, once ``load()`` has imported it.
"""

from .backend import JaxBackend, invad_backends
from .kernels import JaxKernels

__all__ = ["JaxBackend", "JaxKernels", "invad_backends"]

"""The PyTorch backend: every rule becomes a ``torch.autograd.Function``.

``invad.install(backend="torch")`` gives ops that behave like ``torch.linalg``
functions under every PyTorch AD mechanism: ``.backward()``,
``torch.autograd.grad`` (``create_graph=True`` for higher order), forward-mode
dual tensors, and the ``torch.func`` transforms (``grad``, ``vjp``, ``jvp``,
``jacrev``, ``jacfwd``, ``hessian``, ``vmap``).

How a rule is installed (no formula is written here; the rules hold them):

- ``forward`` runs ``rule.primal`` with plain torch kernels
  (``lu_factor_ex``, ``lu_solve``, ``inv_ex``) and returns the value and
  LAPACK ``info`` (non-differentiable). The residuals are saved with
  ``ctx.save_for_backward``/``save_for_forward``: the inputs the rule keeps,
  the *output* value (the residual that holds it, ``inverse`` or ``x``, is
  rebuilt from it so that it carries the op's graph), and the LU
  factorization and its pivots.
- ``backward`` and ``jvp`` run ``rule.vjp`` and ``rule.jvp`` on those.
- An op may have several value outputs (``lu_factor``'s ``(LU, pivots)``,
  ``slogdet``'s ``(sign, logabsdet)``): the Function returns them all, and
  marks those the rule says carry no derivative (pivots) non-differentiable.
  Integer inputs (``lu_solve``'s pivots) get no gradient and no tangent, and
  dtype promotion leaves them alone.
- The LU family's derivatives are built from ``torch.linalg.solve_triangular``
  and a gather of rows (the pivots' permutation, from ``torch.lu_unpack``):
  torch's own differentiable ops, so every order follows by torch's AD.
- The rules apply ``A^-1`` through the kernel ``lu_solve`` on the saved
  factorization. When the derivative must itself be differentiable (grad
  mode on, forward AD, ``torch.func``), that kernel is the ``autograd.Function``
  "solve with this factorization of ``a``" (``LUSolve``), differentiable with
  respect to ``a`` and ``b``, whose own derivatives solve with the same
  factorization again. Every order reuses the one forward LU; first-order
  backward costs one ``lu_solve`` on it.
- Each rule has two Function classes. Under ``torch.func`` transforms, a
  ``setup_context``-style class with a generated vmap rule, which returns the
  LU factorization as extra non-differentiable outputs (functorch saves
  inputs and outputs only). Elsewhere, a plain ``forward(ctx, ...)`` class
  that saves them as intermediates: fewer outputs, fewer Python calls.

- Inputs whose values no derivative reads (``solve``'s ``b``, an ``ArrayMeta``
  residual) are kept as shape and dtype on ``ctx``, never saved: the graph
  holds no more than ``torch.linalg``'s, and ``b`` may change in place.
- Under ``torch.compile`` (``torch.compiler.is_compiling()``) the op takes a
  third class, without ``jvp`` (Dynamo refuses Functions that define one), on
  aten kernels only, and checks for singular input with
  ``torch._linalg_check_errors`` inside the graph, as ``torch.linalg`` does.
  ``fullgraph=True`` works, forward and backward.

torch is imported by :meth:`TorchBackend.load` only: invad works without
torch, and lists this backend as unavailable.

Per-call cost matters for small matrices, so the hot path (checks, the
Function call, the singular check, the first-order backward) avoids every
Python step it can: ``Function.apply`` is called through its C entry point
outside ``torch.func`` transforms, input validation is memoized per input
signature, and the kernels take a direct path in the common case.

The package's modules:

- ``backend``: :class:`TorchBackend` and the ``invad_backends`` hook;
- ``op``: the user-facing op (checks, dispatch, the singular error);
- ``functions``: the ``autograd.Function`` classes built from the rules;
- ``kernels``: the LU solve kernels (``LUSolve``, ``RawLUSolve``), the triangular
  solve, the row interchanges and the determinants, and the kernel sets the
  rules run on (``TorchKernels``, ``DifferentiableKernels``, ``CompileKernels``);
- ``_namespace``: the array namespace the rules get (``array_api_compat.torch``
  with a few functions on the aten ops every torch batching mechanism knows);
- ``_state``: torch and what ``load()`` binds of it, read by all the others.
"""

from .backend import TorchBackend, invad_backends
from .kernels import CompileKernels, DifferentiableKernels, TorchKernels

__all__ = [
    "CompileKernels",
    "DifferentiableKernels",
    "TorchBackend",
    "TorchKernels",
    "invad_backends",
]

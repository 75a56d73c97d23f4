"""What :meth:`TorchBackend.load` binds once torch is imported, in one place.

Every module of the package reads these as attributes of this module
(``state.torch``, ``state.transforms_active()``, ...), never as copies of its
own, so that a later ``load()`` rebinds them for all. invad imports without
torch: until ``load()``, they are ``None``.
"""

from __future__ import annotations

from typing import Any

torch: Any = None  # the torch module, bound by TorchBackend.load()
forward_ad: Any = None  # torch.autograd.forward_ad
LUSolve: Any = None  # the autograd.Function of a solve with a given factorization
RawLUSolve: Any = None  # torch.linalg.lu_solve with a vmap rule of ours
transforms_active: Any = None  # torch._C._are_functorch_transforms_active
lu_solve_native: Any = None  # torch.linalg.lu_solve
solve_ex: Any = None  # torch._linalg_solve_ex (aten): solution, LU, pivots, info
solve_ex_keeps_lu = False  # whether its LU is lu_factor_ex's (see kernels._check_solve_ex)

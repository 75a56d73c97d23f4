"""The CuPy backend: invad's ops as plain functions on CuPy arrays (NVIDIA GPUs).

The package's modules:

- ``backend``: :class:`CupyBackend` (loading, devices, errors) and the
  ``invad_backends`` hook;
- ``kernels``: :class:`CupyKernels`, which CuPy routine each kernel calls on
  which input, and what it factors (``A`` itself, never ``A^T``);
- ``_state``: the ``cupy`` and ``cupyx`` modules that ``load()`` binds (or a
  test's stand-ins).
"""

from .backend import CupyBackend, invad_backends
from .kernels import CupyKernels

__all__ = ["CupyBackend", "CupyKernels", "invad_backends"]

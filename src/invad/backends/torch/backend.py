"""The backend: :class:`TorchBackend`, and the ``invad_backends`` hook that registers it.

torch is imported by :meth:`TorchBackend.load` only, which binds it (and what
the other modules need of it) in :mod:`._state`: invad works without torch,
and lists this backend as unavailable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import array_api_compat

from ...backend import ZERO_PIVOT, Backend
from ...hookspecs import hookimpl
from ...rules import ArrayMeta, Linalg, Rule
from ...rules._linalg import is_complex
from . import _state as state
from ._namespace import TorchNamespace
from .kernels import (
    CompileKernels,
    DifferentiableKernels,
    TorchKernels,
    _check_solve_ex,
    _lu_solve_functions,
)
from .op import _torch_op


class TorchBackend(Backend):
    """PyTorch: ops as ``torch.autograd.Function``s, errors as ``torch.linalg.LinAlgError``."""

    name = "torch"
    native_ad = True
    array_type = "torch.Tensor"
    _namespace: Any = None

    def load(self) -> None:
        try:
            import torch
        except ImportError as exc:
            raise ImportError(
                f"torch is not installed ({exc}); install it with: pip install 'invad[torch]'"
            ) from exc
        import torch.autograd.forward_ad as forward_ad

        state.torch, state.forward_ad = torch, forward_ad
        state.transforms_active = torch._C._are_functorch_transforms_active
        state.lu_solve_native = torch.linalg.lu_solve
        state.solve_ex = getattr(torch, "_linalg_solve_ex", None)
        state.solve_ex_keeps_lu = _check_solve_ex()
        state.LUSolve, state.RawLUSolve = _lu_solve_functions()

    def version(self) -> str | None:
        return str(state.torch.__version__)

    def owns(self, x: Any) -> bool:
        return bool(array_api_compat.is_torch_array(x))

    def namespace(self) -> Any:
        if self._namespace is None:
            import array_api_compat.torch

            self._namespace = TorchNamespace(state.torch, array_api_compat.torch)
        return self._namespace

    @property
    def linalg_error(self) -> type[Exception]:
        return state.torch.linalg.LinAlgError

    def devices(self) -> Sequence[str]:
        torch = state.torch
        names = ["cpu"]
        if torch.cuda.is_available():
            names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            names.append("mps")
        return tuple(names)

    def resolve_device(self, device: Any) -> Any:
        torch = state.torch
        if device is None:
            default = getattr(torch, "get_default_device", None)
            return default() if default is not None else torch.device("cpu")
        try:
            resolved = torch.device(device)
            torch.empty(0, device=resolved)  # raises if this torch cannot use it
        except (RuntimeError, TypeError, ValueError, AssertionError) as exc:
            raise ValueError(
                f"backend 'torch' cannot use device {device!r}: {exc}; "
                f"available devices: {', '.join(self.devices())}"
            ) from None
        return resolved

    def device_of(self, x: Any) -> Any:
        return x.device

    def readable(self, arrays: Sequence[Any]) -> bool:
        torch = state.torch
        return not (
            state.transforms_active()
            or torch.compiler.is_compiling()
            or any(getattr(x, "is_meta", False) for x in arrays)
        )

    def kernels(self, device: Any) -> TorchKernels:
        return TorchKernels()

    def raise_if_singular(
        self, op: str, shape: tuple[int, ...], info: Any, what: str = ZERO_PIVOT
    ) -> None:
        if state.transforms_active() and _under_vmap():
            return  # no data-dependent error under vmap: non-finite values, as linalg.*_ex
        if info.is_meta:
            return  # no values to look at
        if not (bool(info) if info.ndim == 0 else bool(info.any())):
            return
        super().raise_if_singular(op, tuple(shape), info, what)

    def native_op(
        self, rule: Rule, la: Linalg, functional: Callable[..., Any]
    ) -> Callable[..., Any]:
        xp, torch = la.xp, state.torch
        # The rules' dtype cache filled now: torch.compile traces a lookup, not a mutation.
        for dtype in (torch.float32, torch.float64, torch.complex64, torch.complex128):
            is_complex(xp, ArrayMeta((), dtype))
        kernels = Linalg.build(xp, DifferentiableKernels()), Linalg.build(xp, CompileKernels())
        return _torch_op(rule, la, *kernels, self)

    # -- native AD (the conformance kit's check of the installed ops) ------------

    def native_jvp(
        self, fn: Callable[..., Any], primals: tuple[Any, ...], tangents: tuple[Any, ...]
    ) -> Any:
        return state.torch.func.jvp(fn, tuple(primals), tuple(tangents))[1]

    def native_vjp(self, fn: Callable[..., Any], primals: tuple[Any, ...], cotangent: Any) -> Any:
        """PyTorch's reverse mode is already the adjoint (conjugate) convention."""
        _, pullback = state.torch.func.vjp(fn, *primals)
        return tuple(pullback(cotangent))

    def to_numpy(self, x: Any) -> Any:
        return x.detach().cpu().resolve_conj().resolve_neg().numpy()

    def from_numpy(self, x: Any, device: Any) -> Any:
        return state.torch.as_tensor(x, device=device)


def _under_vmap() -> bool:
    functorch = state.torch._C._functorch
    vmap = functorch.TransformType.Vmap
    return any(i.key() == vmap for i in functorch.get_interpreter_stack() or ())


@hookimpl
def invad_backends() -> list[Backend]:
    return [TorchBackend()]

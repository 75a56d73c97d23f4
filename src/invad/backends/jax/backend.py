"""The backend: :class:`JaxBackend`, and the ``invad_backends`` hook that registers it.

jax is imported by :meth:`JaxBackend.load` only, which binds it in
:mod:`._state`: invad works without jax, and lists this backend as unavailable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import array_api_compat
import numpy as np

from ...backend import Backend, Derivatives, not_accepted
from ...hookspecs import hookimpl
from ...rules import Linalg, Rule
from . import _state as state
from .derivatives import jitted_derivatives
from .kernels import JaxKernels
from .op import native_op


class JaxBackend(Backend):
    name = "jax"
    native_ad = True
    raises_on_singular = False
    array_type = "jax.Array (or NumPy arrays and scalars, as jax.numpy does)"

    def accept(self, op: str, names: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
        """JAX arrays (tracers too) as they are, NumPy arrays and scalars converted as
        ``jnp.linalg`` converts them; lists, as there, and other frameworks' arrays refuse."""
        jax = state.jax
        out = []
        for name, x in zip(names, args):
            if not isinstance(x, jax.Array):
                if not isinstance(x, (np.ndarray, np.generic, int, float, complex)):
                    raise TypeError(not_accepted(self, op, name, x))
                x = jax.numpy.asarray(x)
            out.append(x)
        return tuple(out)

    def adopt(self, x: Any, like: Any) -> Any:
        return state.jax.numpy.asarray(x)  # as jax.numpy takes a NumPy operand next to a JAX one

    def load(self) -> None:
        try:
            import jax
            import jax.numpy
        except ImportError as exc:
            raise ImportError(
                f"jax is not installed ({exc}); install it with: pip install 'invad[jax]'"
            ) from exc

        state.jax = jax

    def version(self) -> str | None:
        return str(state.jax.__version__)

    def owns(self, x: Any) -> bool:
        return bool(array_api_compat.is_jax_array(x))

    def namespace(self) -> Any:
        return state.jax.numpy

    def readable(self, arrays: Sequence[Any]) -> bool:
        tracer = state.jax.core.Tracer
        return not any(isinstance(x, tracer) for x in arrays)

    @property
    def linalg_error(self) -> type[Exception]:
        # Never raised (raises_on_singular is false); JAX has no LinAlgError of its own.
        return np.linalg.LinAlgError

    # -- devices --------------------------------------------------------------

    def devices(self) -> Sequence[str]:
        return tuple(f"{d.platform}:{d.id}" for d in state.jax.devices())

    def resolve_device(self, device: Any) -> Any:
        """``None`` (the default device), a ``jax.Device``, an index, ``"cpu"`` or ``"cpu:1"``."""
        jax = state.jax
        if device is None:
            return jax.devices()[0]
        if isinstance(device, jax.Device):
            return device
        try:
            if isinstance(device, int) and not isinstance(device, bool):
                return jax.devices()[device]
            if isinstance(device, str):
                platform, _, index = device.partition(":")
                return jax.devices(platform)[int(index) if index else 0]
        except (IndexError, ValueError, RuntimeError):
            pass
        raise ValueError(
            f"backend 'jax' has no device {device!r}; devices are {', '.join(self.devices())}"
        )

    def device_of(self, x: Any) -> Any:
        """The device of a concrete JAX array; ``None`` (no check) for tracers and host data."""
        if not array_api_compat.is_jax_array(x) or isinstance(x, state.jax.core.Tracer):
            return None
        devices = x.devices()
        return next(iter(devices)) if len(devices) == 1 else frozenset(devices)

    def kernels(self, device: Any) -> JaxKernels:
        return JaxKernels()

    def derivatives(self, rule: Rule, la: Linalg) -> Derivatives:
        """``ops.jvp`` and ``ops.vjp``, each one jitted program (:mod:`.derivatives`)."""
        return jitted_derivatives(self, rule, la)

    def to_numpy(self, x: Any) -> Any:
        return np.asarray(x)

    def from_numpy(self, x: Any, device: Any) -> Any:
        x = np.asarray(x)
        wide = x.dtype in (np.float64, np.complex128)
        if wide and not state.jax.config.jax_enable_x64:
            # JAX would silently make it 32-bit; the conformance kit needs the real thing.
            raise TypeError(
                f"invad (jax): {x.dtype} data needs 64-bit JAX: set JAX_ENABLE_X64=1 or call "
                "jax.config.update('jax_enable_x64', True) before creating arrays"
            )
        return state.jax.device_put(x, device)

    # -- native AD ------------------------------------------------------------

    def native_jvp(
        self, fn: Callable[..., Any], primals: tuple[Any, ...], tangents: tuple[Any, ...]
    ) -> Any:
        return state.jax.jvp(fn, tuple(primals), tuple(tangents))[1]

    def native_vjp(self, fn: Callable[..., Any], primals: tuple[Any, ...], cotangent: Any) -> Any:
        """``jax.vjp`` is the linear transpose; conjugating around it gives the adjoint."""
        jax = state.jax
        _, pullback = jax.vjp(fn, *primals)
        cotangent = jax.tree_util.tree_map(jax.numpy.conj, cotangent)  # one array or a tuple
        return tuple(jax.numpy.conj(g) for g in pullback(cotangent))

    def native_op(
        self, rule: Rule, la: Linalg, functional: Callable[..., Any]
    ) -> Callable[..., Any]:
        return native_op(self, rule, la)


@hookimpl
def invad_backends() -> list[Backend]:
    return [JaxBackend()]

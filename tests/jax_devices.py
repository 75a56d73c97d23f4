"""Device placement on two JAX host devices; run by tests/test_jax.py::test_two_host_devices.

XLA_FLAGS=--xla_force_host_platform_device_count=2 must be set before jax is
imported, hence a separate process:

    XLA_FLAGS=--xla_force_host_platform_device_count=2 JAX_ENABLE_X64=1 python tests/jax_devices.py
"""

from __future__ import annotations

import numpy as np


def main() -> None:
    import jax
    import jax.numpy as jnp

    import invad
    from invad.rules import RULES
    from invad.testing import Harness, checks
    from invad.testing import cases as C

    assert jax.config.jax_enable_x64, "run with JAX_ENABLE_X64=1"
    d0, d1 = jax.devices()[:2]

    # install(device=...) says where created arrays go; the same device by any name is one Ops.
    ops1 = invad.install("jax", device=d1)
    assert ops1.device == d1
    assert invad.install("jax", device="cpu:1") is ops1 and invad.install("jax", device=1) is ops1
    ops0 = invad.install("jax")
    assert ops0.device == d0 and ops0 is not ops1
    assert ops1.backend.devices() == ("cpu:0", "cpu:1")

    rng = np.random.default_rng(0)
    a_np = C.well_conditioned(rng, (4,), 3, "float64")
    b_np = C.random_array(rng, (4, 3, 2), "float64")
    a = ops1.backend.from_numpy(a_np, ops1.device)
    b = ops1.backend.from_numpy(b_np, ops1.device)
    assert a.devices() == {d1} and b.devices() == {d1}

    # Outputs stay on the inputs' device, whichever device the Ops was installed for.
    for ops in (ops1, ops0):
        outputs = [
            ops.solve(a, b),
            *ops.solve_ex(a, b),
            *ops.inv_ex(a),
            ops.inv(a),
            ops.tensorinv(a[0], ind=1),
            ops.tensorsolve(a[0], b[0, :, 0]),
            *jax.grad(lambda a, b, ops=ops: jnp.sum(ops.solve(a, b) ** 2), (0, 1))(a, b),
            jax.jit(jax.grad(lambda a, ops=ops: jnp.sum(ops.inv(a))))(a),
            jax.vmap(ops.solve)(a, b),
            *ops.jvp("solve", (a, b), (a, b))[1:],
            *ops.vjp("solve", (a, b), ops.solve(a, b))[1],
        ]
        for out in outputs:
            assert out.devices() == {d1}, (ops, out.devices())
        np.testing.assert_allclose(outputs[0], np.linalg.solve(a_np, b_np), rtol=1e-12)

    # a and b on different devices: ValueError naming both, from ops and from ops.jvp / ops.vjp.
    a0 = jax.device_put(a_np, d0)
    for call in (
        lambda: ops1.solve(a0, b),
        lambda: ops1.solve_ex(a0, b),
        lambda: ops0.tensorsolve(a0[0], b[0, :, 0]),
        lambda: ops1.jvp("solve", (a0, b), (a0, b)),
        lambda: ops1.vjp("solve", (a0, b), b),
    ):
        try:
            call()
        except ValueError as exc:
            message = str(exc)
            assert str(d0) in message and str(d1) in message, message
            assert "`a` is on device" in message and "`b` is on device" in message, message
        else:
            raise AssertionError("mixed devices were not rejected")

    # Under tracing the arrays are tracers: no device check (JAX places the computation).
    out = jax.jit(lambda a, b: ops1.solve(a, b))(a, b)
    assert out.devices() == {d1}

    # The conformance kit's forward checks with the Harness on device 1.
    h = Harness("jax", d1)
    for op in RULES:
        for shape in C.SHAPES[op][:2]:
            result = checks.check_forward(h, op, shape, "float64", np.random.default_rng(1))
            assert result.passed, result
            result = checks.check_vjp(h, op, shape, "complex128", np.random.default_rng(2))
            assert result.passed, result
    print("two-device checks passed")


if __name__ == "__main__":
    main()

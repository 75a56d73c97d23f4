"""Implicit differentiation: a Newton solve differentiated with one LU factorization.

``F(x, theta, W) = x + tanh(W x) / 2 - theta = 0`` defines ``x*(theta, W)``,
found by Newton's method. Differentiating through the Newton iterations would
store every step; the implicit function theorem needs only the Jacobian
``J = dF/dx`` at the solution: for a loss ``l(x*)`` with ``xbar = dl/dx*``,

    lambda = J^-T xbar     (one lu_factor of J, one lu_solve(..., adjoint=True))
    thetabar = lambda,     Wbar = -(s * lambda) x*^T / 2,   s = 1 - tanh(W x*)^2

written as a custom backward pass in torch and as a ``jax.custom_vjp``, each
checked against central finite differences of the Newton solve itself.

    python docs/examples/implicit_newton.py
"""

from __future__ import annotations

from typing import Any

import numpy as np

import invad

N, NEWTON_STEPS = 6, 30


def residual(xp: Any, x: Any, theta: Any, w: Any) -> Any:
    return x + xp.tanh(w @ x) / 2 - theta


def jacobian(xp: Any, x: Any, w: Any) -> Any:
    """dF/dx = I + diag(1 - tanh(W x)^2) W / 2."""
    s = 1 - xp.tanh(w @ x) ** 2
    return xp.eye(x.shape[0], dtype=x.dtype) + s[:, None] * w / 2


def newton(ops: invad.Ops, theta: Any, w: Any) -> Any:
    xp = ops.xp
    x = xp.zeros_like(theta)
    for _ in range(NEWTON_STEPS):
        x = x - ops.solve(jacobian(xp, x, w), residual(xp, x, theta, w))
    return x


def implicit_vjp(ops: invad.Ops, x: Any, w: Any, xbar: Any) -> tuple[Any, Any]:
    """(thetabar, Wbar) from the Jacobian at the solution: one factorization, one adjoint solve."""
    xp = ops.xp
    lu, pivots = ops.lu_factor(jacobian(xp, x, w))
    lam = ops.lu_solve(lu, pivots, xbar, adjoint=True)  # J^-T xbar (J^H = J^T: real)
    s = 1 - xp.tanh(w @ x) ** 2
    return lam, -((s * lam)[:, None] * x[None, :]) / 2


def loss_of(x: Any, target: Any) -> Any:
    return ((x - target) ** 2).sum() / 2


def problem() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((N, N)) / np.sqrt(N)
    theta, target = rng.standard_normal(N), rng.standard_normal(N)
    directions = rng.standard_normal(N), rng.standard_normal((N, N))
    return w, theta, target, *directions


def finite_difference(loss: Any, theta: Any, w: Any, dtheta: Any, dw: Any) -> float:
    step = 1e-6
    return float(
        (loss(theta + step * dtheta, w + step * dw) - loss(theta - step * dtheta, w - step * dw))
        / (2 * step)
    )


def run_torch() -> tuple[float, float]:
    import torch

    ops = invad.install("torch")

    class Solve(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, theta: Any, w: Any) -> Any:
            x = newton(ops, theta, w)
            ctx.save_for_backward(x, w)
            return x

        @staticmethod
        def backward(ctx: Any, xbar: Any) -> tuple[Any, Any]:
            x, w = ctx.saved_tensors
            return implicit_vjp(ops, x, w, xbar)

    w, theta, target, dtheta, dw = (torch.tensor(v) for v in problem())
    t, m = theta.clone().requires_grad_(), w.clone().requires_grad_()
    loss_of(Solve.apply(t, m), target).backward()
    implicit = float((t.grad * dtheta).sum() + (m.grad * dw).sum())
    with torch.no_grad():
        fd = finite_difference(
            lambda a, b: loss_of(newton(ops, a, b), target), theta, w, dtheta, dw
        )
    return implicit, fd


def run_jax() -> tuple[float, float]:
    import jax
    import jax.numpy as jnp

    ops = invad.install("jax")

    @jax.custom_vjp
    def solve(theta: Any, w: Any) -> Any:
        return newton(ops, theta, w)

    def forward(theta: Any, w: Any) -> tuple[Any, Any]:
        x = newton(ops, theta, w)
        return x, (x, w)

    def backward(res: Any, xbar: Any) -> tuple[Any, Any]:
        x, w = res
        return implicit_vjp(ops, x, w, xbar)

    solve.defvjp(forward, backward)
    w, theta, target, dtheta, dw = (jnp.asarray(v) for v in problem())
    gt, gw = jax.grad(lambda a, b: loss_of(solve(a, b), target), argnums=(0, 1))(theta, w)
    implicit = float(jnp.sum(gt * dtheta) + jnp.sum(gw * dw))
    fd = finite_difference(lambda a, b: loss_of(newton(ops, a, b), target), theta, w, dtheta, dw)
    return implicit, fd


def main() -> None:
    import jax

    jax.config.update("jax_enable_x64", True)
    print(f"F(x, theta, W) = x + tanh(W x)/2 - theta = 0, n = {N}, {NEWTON_STEPS} Newton steps")
    for name, run in (("torch", run_torch), ("jax", run_jax)):
        implicit, fd = run()
        error = abs(implicit - fd) / max(abs(fd), 1e-300)
        print(
            f"  {name:5s} directional derivative: implicit {implicit:.10f}, "
            f"finite differences {fd:.10f}, relative difference {error:.1e}"
        )


if __name__ == "__main__":
    main()

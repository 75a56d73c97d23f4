"""Gaussian-process regression: one negative log marginal likelihood, three frameworks.

The likelihood is written once, against the array API namespace that
``invad.install`` hands out (``ops.xp``) plus invad's ops: ``cholesky``,
``cholesky_solve`` and the log-determinant from the factor's diagonal. Its
hyperparameter gradient comes from torch autograd, from ``jax.grad``, and from
NumPy through ``ops.vjp``; the three agree to 1e-10 in float64. Then each
framework fits the hyperparameters by gradient descent, the NumPy fit draws
the posterior, and one likelihood-plus-gradient at n = 1000 is timed against
the same written with native torch and JAX ops.

    python docs/examples/gp_regression.py [--plot PATH] [--no-timing]
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import numpy as np

import invad

#: theta = (log lengthscale, log signal amplitude, log noise amplitude)
THETA0 = np.array([0.0, 0.0, -1.0])
STEPS, LEARNING_RATE = 40, 0.01


def kernel_matrix(xp: Any, x: Any, theta: Any) -> Any:
    """The RBF kernel matrix with noise: sf^2 exp(-|x_i - x_j|^2 / (2 l^2)) + sn^2 I."""
    lengthscale, signal, noise = xp.exp(theta[0]), xp.exp(2 * theta[1]), xp.exp(2 * theta[2])
    d2 = (x[:, None] - x[None, :]) ** 2
    eye = xp.eye(x.shape[0], dtype=x.dtype)
    return signal * xp.exp(-0.5 * d2 / lengthscale**2) + noise * eye


def negative_log_marginal_likelihood(ops: invad.Ops, x: Any, y: Any, theta: Any) -> Any:
    """-log p(y | x, theta) = y^T K^-1 y / 2 + log det K / 2 + n log(2 pi) / 2, via Cholesky."""
    xp = ops.xp
    c = ops.cholesky(kernel_matrix(xp, x, theta))
    alpha = ops.cholesky_solve(c, y)
    log_det = 2 * xp.sum(xp.log(xp.linalg.diagonal(c)))
    return 0.5 * xp.sum(y * alpha) + 0.5 * log_det + 0.5 * x.shape[0] * math.log(2 * math.pi)


# -- the gradient in each framework --------------------------------------------------


def torch_value_and_grad(x: np.ndarray, y: np.ndarray, theta: np.ndarray) -> tuple[float, Any]:
    import torch

    ops = invad.install("torch")
    t = torch.tensor(theta, requires_grad=True)
    value = negative_log_marginal_likelihood(ops, torch.tensor(x), torch.tensor(y), t)
    (grad,) = torch.autograd.grad(value, t)
    return float(value.detach()), grad.numpy()


def jax_value_and_grad_fn(x: np.ndarray, y: np.ndarray) -> Any:
    import jax

    ops = invad.install("jax")
    xs, ys = jax.numpy.asarray(x), jax.numpy.asarray(y)
    return jax.jit(jax.value_and_grad(lambda t: negative_log_marginal_likelihood(ops, xs, ys, t)))


def numpy_value_and_grad(x: np.ndarray, y: np.ndarray, theta: np.ndarray) -> tuple[float, Any]:
    """The same gradient without an AD engine: the rules' VJPs chained by hand through
    ``ops.vjp``, then the kernel matrix's derivatives by the chain rule."""
    ops = invad.install()
    k = kernel_matrix(np, x, theta)
    c = ops.cholesky(k)
    alpha, (cbar, _) = ops.vjp("cholesky_solve", (c, y), 0.5 * y)  # from y^T alpha / 2
    cbar = cbar + np.diag(1 / np.diagonal(c))  # from log det K / 2 = sum(log diag c)
    _, (kbar,) = ops.vjp("cholesky", (k,), cbar)
    value = 0.5 * y @ alpha + np.sum(np.log(np.diagonal(c))) + 0.5 * len(x) * math.log(2 * math.pi)
    lengthscale, signal = np.exp(theta[0]), np.exp(2 * theta[1])
    d2 = (x[:, None] - x[None, :]) ** 2
    rbf = signal * np.exp(-0.5 * d2 / lengthscale**2)
    dk = (rbf * d2 / lengthscale**2, 2 * rbf, 2 * np.exp(2 * theta[2]) * np.eye(len(x)))
    return float(value), np.array([np.sum(kbar * d) for d in dk])


# -- fitting, the posterior, timing ----------------------------------------------------


def fit(value_and_grad: Any, theta: np.ndarray) -> tuple[np.ndarray, float]:
    """Plain gradient descent, the same in every framework: ``STEPS`` steps."""
    theta = np.array(theta, dtype=np.float64)
    for _ in range(STEPS):
        _, grad = value_and_grad(theta)
        theta = theta - LEARNING_RATE * np.asarray(grad)
    return theta, float(value_and_grad(theta)[0])


def posterior(x: np.ndarray, y: np.ndarray, theta: np.ndarray, xs: np.ndarray) -> Any:
    """Posterior mean and standard deviation at ``xs``, from the factor of K (invad NumPy)."""
    ops = invad.install()
    c = ops.cholesky(kernel_matrix(np, x, theta))
    lengthscale, signal = np.exp(theta[0]), np.exp(2 * theta[1])
    cross = signal * np.exp(-0.5 * (x[:, None] - xs[None, :]) ** 2 / lengthscale**2)
    mean = cross.T @ ops.cholesky_solve(c, y)
    v = ops.solve_triangular(c, cross, upper=False)
    return mean, np.sqrt(np.maximum(signal - np.sum(v * v, axis=0), 0))


def plot(x: np.ndarray, y: np.ndarray, theta: np.ndarray, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = np.linspace(x.min() - 0.5, x.max() + 0.5, 300)
    mean, sd = posterior(x, y, theta, xs)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.fill_between(xs, mean - 2 * sd, mean + 2 * sd, alpha=0.25, label="mean +- 2 sd")
    ax.plot(xs, mean, label="posterior mean")
    ax.plot(xs, np.sin(xs), "k--", lw=1, label="sin(x), the truth")
    ax.plot(x, y, "o", ms=4, label="data")
    ax.set_title("GP regression, hyperparameters fitted through invad's Cholesky")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def median_seconds(fn: Any, repeats: int) -> float:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples))


def timing(n: int = 1000, repeats: int = 7) -> None:
    """One likelihood plus gradient at ``n`` points: invad against native torch and JAX."""
    import jax
    import jax.numpy as jnp
    import jax.scipy.linalg
    import torch

    rng = np.random.default_rng(1)
    x = np.sort(rng.uniform(-5, 5, n))
    y = np.sin(x) + 0.1 * rng.standard_normal(n)
    print(f"timing: one likelihood + gradient at n = {n} (median of {repeats})")

    ops_t = invad.install("torch")
    xt, yt, t0 = torch.tensor(x), torch.tensor(y), torch.tensor(THETA0)

    def native_torch(x: Any, y: Any, theta: Any) -> Any:
        c = torch.linalg.cholesky(kernel_matrix(torch, x, theta))
        alpha = torch.cholesky_solve(y[:, None], c)[:, 0]
        log_det = 2 * torch.log(torch.diagonal(c)).sum()
        return 0.5 * (y * alpha).sum() + 0.5 * log_det + 0.5 * len(x) * math.log(2 * math.pi)

    def torch_step(f: Any) -> Any:
        t = t0.clone().requires_grad_()
        return torch.autograd.grad(f(xt, yt, t), t)

    invad_t = median_seconds(
        lambda: torch_step(lambda *a: negative_log_marginal_likelihood(ops_t, *a)), repeats
    )
    native_t = median_seconds(lambda: torch_step(native_torch), repeats)
    print(
        f"  torch: invad {1e3 * invad_t:.1f} ms, native {1e3 * native_t:.1f} ms, "
        f"ratio {invad_t / native_t:.2f}"
    )

    ops_j = invad.install("jax")
    xj, yj, tj = jnp.asarray(x), jnp.asarray(y), jnp.asarray(THETA0)

    def native_jax(theta: Any) -> Any:
        c = jnp.linalg.cholesky(kernel_matrix(jnp, xj, theta))
        alpha = jax.scipy.linalg.cho_solve((c, True), yj)
        log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(c)))
        return 0.5 * jnp.sum(yj * alpha) + 0.5 * log_det + 0.5 * n * math.log(2 * math.pi)

    invad_j = jax.jit(
        jax.value_and_grad(lambda t: negative_log_marginal_likelihood(ops_j, xj, yj, t))
    )
    native_j = jax.jit(jax.value_and_grad(native_jax))
    mine = median_seconds(lambda: jax.block_until_ready(invad_j(tj)), repeats)
    theirs = median_seconds(lambda: jax.block_until_ready(native_j(tj)), repeats)
    print(
        f"  jax:   invad {1e3 * mine:.1f} ms, native {1e3 * theirs:.1f} ms, "
        f"ratio {mine / theirs:.2f}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plot", metavar="PATH", help="write the posterior plot (PNG) here")
    parser.add_argument("--no-timing", action="store_true", help="skip the n = 1000 timing")
    args = parser.parse_args(argv)
    import jax

    jax.config.update("jax_enable_x64", True)  # float64 throughout, as the other two

    rng = np.random.default_rng(0)
    x = np.sort(rng.uniform(-4, 4, 40))
    y = np.sin(x) + 0.1 * rng.standard_normal(40)
    print(f"data: {len(x)} noisy samples of sin(x); theta = (log l, log sf, log sn)")

    jax_fn = jax_value_and_grad_fn(x, y)

    def jax_value_and_grad(theta: np.ndarray) -> tuple[float, Any]:
        value, grad = jax_fn(jax.numpy.asarray(theta))
        return float(value), np.asarray(grad)

    frameworks = {
        "torch": lambda t: torch_value_and_grad(x, y, t),
        "jax": jax_value_and_grad,
        "numpy": lambda t: numpy_value_and_grad(x, y, t),
    }
    grads = {name: np.asarray(fn(THETA0)[1]) for name, fn in frameworks.items()}
    print(f"gradient at theta0 = {THETA0.tolist()}:")
    for name, g in grads.items():
        print(f"  {name:6s} {np.array2string(g, precision=12)}")
    spread = max(np.max(np.abs(g - grads["torch"])) for g in grads.values())
    print(f"  largest difference between frameworks: {spread:.1e}")

    print(f"fit: {STEPS} gradient-descent steps of {LEARNING_RATE} from theta0")
    start_value = frameworks["numpy"](THETA0)[0]
    fits = {name: fit(fn, THETA0) for name, fn in frameworks.items()}
    for name, (theta, value) in fits.items():
        print(
            f"  {name:6s} theta = {np.array2string(theta, precision=6)}, "
            f"nlml {start_value:.6f} -> {value:.6f}"
        )
    fitted = fits["numpy"][0]
    if args.plot:
        plot(x, y, fitted, args.plot)
        print(f"plot: {args.plot}")
    if not args.no_timing:
        timing()


if __name__ == "__main__":
    main()

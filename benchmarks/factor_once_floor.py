"""Factor once, solve many on torch: what any ``lu_solve`` would cost, measured.

    python benchmarks/factor_once_floor.py [--repeats N]

The workload of ``bench_torch.py``'s factor-once row (n = 256, one right-hand
side, 100 solves, float64, the gradients of ``a`` and of every right-hand
side), timed interleaved in one process (medians), with two lower bounds
that no implementation of ``lu_solve`` can go under in torch's eager
autograd:

- ``harness``: the same loss and ``torch.autograd.grad``, with a Function in
  place of ``lu_solve`` that computes nothing (its forward copies ``b``, its
  backward passes the cotangent to ``b`` and none to ``LU``): the Python loss,
  the autograd engine, the indexing of ``bs[i]`` and its backward;
- ``kernels``: no autograd, only the arithmetic of invad's rule, by torch's
  kernels: per solve a row gather and two triangular solves forward, two
  triangular solves, a row gather and the ``n x n`` cotangent of ``LU``
  (``-tril_-(h y^H) - triu(g x^H)``, on a cached mask) added to the others
  backward; plus one ``lu_factor`` and its backward (two triangular solves
  with ``n`` columns and two products).

Their sum is the floor of the factor-once side; ``solve each`` over it is
the best ratio any ``lu_solve`` could reach here. Prints one line per figure.
"""

from __future__ import annotations

import argparse
from typing import Any

N, SOLVES = 256, 100


def cases(torch: Any, ops: Any) -> dict[str, Any]:
    g = torch.Generator().manual_seed(3)
    dtype = torch.float64
    a = torch.randn(N, N, dtype=dtype, generator=g) + 2 * N**0.5 * torch.eye(N, dtype=dtype)
    a.requires_grad_()
    bs = torch.randn(SOLVES, N, 1, dtype=dtype, generator=g).requires_grad_()
    ybars = torch.randn(SOLVES, N, 1, dtype=dtype, generator=g)

    class Nothing(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, lu: Any, b: Any) -> Any:
            return b.clone()

        @staticmethod
        def backward(ctx: Any, xbar: Any) -> Any:
            return None, xbar

    def loss_of(solve: Any) -> Any:
        return sum((solve(bs[i]) * ybars[i]).sum() for i in range(SOLVES))

    def factor_once() -> Any:
        lu, pivots = ops.lu_factor(a)
        return torch.autograd.grad(loss_of(lambda b: ops.lu_solve(lu, pivots, b)), (a, bs))

    def solve_each() -> Any:
        return torch.autograd.grad(loss_of(lambda b: ops.solve(a, b)), (a, bs))

    def harness() -> Any:
        lu = a * 1  # a tensor in the graph, as lu_factor's LU is
        loss = loss_of(lambda b: Nothing.apply(lu, b))
        return torch.autograd.grad(loss, (a, bs), allow_unused=True)

    mask = torch.ones(N, N, dtype=torch.bool).triu(1)
    rows = torch.arange(N)  # the gather's index: any permutation costs the same
    b0, ybar0 = bs.detach(), ybars

    def kernels() -> Any:
        lu, _ = torch.linalg.lu_factor(a.detach())
        lubar, bbars = torch.zeros_like(lu), []
        for i in range(SOLVES):
            y = torch.linalg.solve_triangular(
                lu, b0[i].index_select(-2, rows), upper=False, unitriangular=True
            )
            x = torch.linalg.solve_triangular(lu, y, upper=True)
            g_ = torch.linalg.solve_triangular(lu.mH, ybar0[i], upper=False)
            h = torch.linalg.solve_triangular(lu.mH, g_, upper=True, unitriangular=True)
            bbars.append(h.index_select(-2, rows))
            lubar += torch.where(mask, y * (-h).mT, x * (-g_).mT).mT
        # lu_factor's backward: two triangular solves with n columns, two products
        f = lu.mH @ lubar.tril(-1) + lubar.triu() @ lu.triu().mH
        f = torch.linalg.solve_triangular(lu.triu().mH, f, upper=False, left=False)
        return torch.linalg.solve_triangular(lu.mH, f, upper=True, unitriangular=True)

    return {
        "factor once (invad)": factor_once,
        "solve each (invad)": solve_each,
        "harness": harness,
        "kernels": kernels,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    import torch

    import invad
    from invad.bench import median_times

    fns = cases(torch, invad.install("torch"))
    t = {k: 1e3 * v for k, v in median_times(fns, args.repeats).items()}
    floor = t["harness"] + t["kernels"]
    for name, ms in t.items():
        print(f"{name:22s} {ms:7.1f} ms")
    print(f"{'floor (sum of both)':22s} {floor:7.1f} ms")
    each, once = t["solve each (invad)"], t["factor once (invad)"]
    print(f"solve each / factor once: {each / once:.2f}x; best possible here: {each / floor:.2f}x")


if __name__ == "__main__":
    main()

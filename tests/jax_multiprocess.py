"""One of two JAX processes joined by ``jax.distributed``; run by tests/test_jax_multiprocess.py.

    python tests/jax_multiprocess.py PORT PROCESS_ID

Each process has one CPU device; ``jax.distributed.initialize`` (coordinator on
127.0.0.1:PORT, CPU collectives over gloo, JAX's default on CPU) makes them a
two-device mesh. The batch is sharded over it, each process holding its half
(``jax.make_array_from_process_local_data``). Under ``jit``: invad's solve,
its ``jax.jvp`` and ``jax.grad`` of a scalar loss (a sum over the whole batch,
the only cross-process reduction). The process compares the shards it holds
with the same functions run in one process (its own device, the whole batch,
no mesh) and prints one JSON line: the largest differences, and whether the
compiled sharded solve contains an all-gather or an all-to-all.
"""

from __future__ import annotations

import json
import sys

import numpy as np

BATCH, N, K = 8, 4, 2


def main() -> None:
    port, pid = sys.argv[1], int(sys.argv[2])
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}",
        num_processes=2,
        process_id=pid,
        initialization_timeout=120,
    )
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    import invad
    from invad.testing import cases as C

    ops = invad.install("jax")
    rng = np.random.default_rng(0)  # the same batch in both processes
    a = C.well_conditioned(rng, (BATCH,), N, "float64")
    b = C.random_array(rng, (BATCH, N, K), "float64")
    da = C.random_array(rng, a.shape, "float64")
    db = C.random_array(rng, b.shape, "float64")

    def solve(a: jax.Array, b: jax.Array) -> jax.Array:
        return ops.solve(a, b)

    def tangent(a: jax.Array, b: jax.Array, da: jax.Array, db: jax.Array) -> jax.Array:
        return jax.jvp(solve, (a, b), (da, db))[1]

    def loss(a: jax.Array, b: jax.Array) -> jax.Array:
        return jnp.sum(jnp.sin(solve(a, b)))

    grad = jax.grad(loss, argnums=(0, 1))

    # Sharded: each process holds half of the batch, on its device of the mesh.
    mesh = Mesh(np.array(jax.devices()), ("batch",))
    sharded = NamedSharding(mesh, P("batch"))
    lo, hi = pid * BATCH // 2, (pid + 1) * BATCH // 2

    def shard(x: np.ndarray) -> jax.Array:
        return jax.make_array_from_process_local_data(sharded, x[lo:hi], x.shape)

    args = tuple(shard(x) for x in (a, b, da, db))
    x = jax.jit(solve, out_shardings=sharded)(*args[:2])
    dx = jax.jit(tangent, out_shardings=sharded)(*args)
    ga, gb = jax.jit(grad, out_shardings=(sharded, sharded))(*args[:2])
    hlo = jax.jit(solve, out_shardings=sharded).lower(*args[:2]).compile().as_text()

    # One process: this process's device alone, the whole batch.
    local = jax.local_devices()[0]
    one = tuple(jax.device_put(v, local) for v in (a, b, da, db))
    ref = {
        "forward": jax.jit(solve)(*one[:2]),
        "jvp": jax.jit(tangent)(*one),
        **dict(zip(("grad_a", "grad_b"), jax.jit(grad)(*one[:2]))),
    }
    report: dict[str, object] = {
        "process": pid,
        "processes": jax.process_count(),
        "devices": len(jax.devices()),
        "all_gather": "all-gather" in hlo,
        "all_to_all": "all-to-all" in hlo,
        "numpy": float(np.abs(np.asarray(ref["forward"]) - np.linalg.solve(a, b)).max()),
    }
    for name, got in (("forward", x), ("jvp", dx), ("grad_a", ga), ("grad_b", gb)):
        shards = got.addressable_shards
        report[f"{name}_rows"] = [[s.index[0].start, s.index[0].stop] for s in shards]
        want = np.asarray(ref[name])
        report[name] = max(float(np.abs(np.asarray(s.data) - want[s.index]).max()) for s in shards)
    print(json.dumps(report), flush=True)
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()

"""The test matrix: one session per backend, each in its own environment.

nox                    # every session (about 37 minutes on 2 cores, 25 of them tests-jax)
nox -s tests-numpy     # one of them

Each session's time is in README.md and CONTRIBUTING.md.
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.error_on_missing_interpreters = False
nox.options.sessions = [
    "lint",
    "typecheck",
    "tests-numpy",
    "tests-strict",
    "tests-autograd-plugin",
    "tests-torch",
    "tests-jax",
    "tests-cupy",
    "tests-dask",
    "examples",
    "docs",
]

TORCH_PIN = ("-c", "constraints/torch.txt")

#: The tests every backend's session runs on its backend (tests-numpy runs all of tests/).
EVERY_BACKEND = (
    "tests/test_cholesky.py",
    "tests/test_lu_family.py",
    "tests/test_singular.py",
    "tests/test_tensorsolve.py",
    "tests/test_inputs.py",
    "tests/test_threads.py",
    "tests/test_quiet.py",
)
#: Two pytest worker processes (pytest-xdist) where tests are compile-bound (JAX): XLA
#: compiles a program on one core, so on two cores two workers take about 0.7 of the time.
XDIST = "pytest-xdist>=3.8"
TWO_WORKERS = ("-n", "2")
#: The Python blocks of README.md and docs/: each session runs those of its framework.
CODE_BLOCKS = "tests/test_code_blocks.py"


def pytest(
    session: nox.Session, backend: str, *paths: str, env: dict[str, str] | None = None
) -> None:
    """The project's tests in ``paths``, with ``backend`` as the backend under test."""
    session.run(
        "pytest",
        *(paths or ("tests",)),
        *session.posargs,
        env={"INVAD_TEST_BACKENDS": backend, **(env or {})},
    )


def conformance(
    session: nox.Session, backend: str, *args: str, env: dict[str, str] | None = None
) -> None:
    """The one command a plugin author runs: invad's conformance kit on ``backend``."""
    session.run(
        "pytest", "--pyargs", "invad.testing", "--invad-backend", backend, "-q", *args, env=env
    )


@nox.session(name="tests-numpy")
def tests_numpy(session: nox.Session) -> None:
    """The core, the CLI and the NumPy backend, the embedded default; then the README's main job."""
    session.install(".[test]")
    pytest(session, "numpy")
    conformance(session, "numpy")
    session.run("invad", "check")


@nox.session(name="tests-strict")
def tests_strict(session: nox.Session) -> None:
    """The rules over array-api-strict, through its plugin: proof that the core is agnostic."""
    session.install(".[test]", "./plugins/invad-strict")
    conformance(session, "array-api-strict")
    pytest(session, "array-api-strict", "tests/test_devices.py", *EVERY_BACKEND)


# Issue-tracker name of the same session: a plugin author's view of invad-strict.
nox.session(name="tests-strict-plugin")(tests_strict)


@nox.session(name="tests-autograd-plugin")
def tests_autograd_plugin(session: nox.Session) -> None:
    """The third-party autograd backend: its own tests, then the conformance kit on it."""
    session.install(".[test]", "./plugins/invad-autograd")
    session.run("pytest", "-q", "plugins/invad-autograd", *session.posargs)
    pytest(session, "autograd", *EVERY_BACKEND)
    conformance(session, "autograd")


@nox.session(name="tests-torch")
def tests_torch(session: nox.Session) -> None:
    """The torch backend (CPU build pinned), its device contract with `meta`, then the kit."""
    session.install(*TORCH_PIN, ".[test,torch]")
    pytest(
        session,
        "torch",
        "tests/test_torch.py",
        "tests/test_torch_compile.py",
        "tests/test_devices.py",
        CODE_BLOCKS,
        *EVERY_BACKEND,
    )
    conformance(session, "torch")


@nox.session(name="tests-jax")
def tests_jax(session: nox.Session) -> None:
    """The JAX backend, its device contract, sharding on two forced host devices and across
    two processes (jax.distributed), then the kit.

    JAX_ENABLE_X64=1: the float64 and complex128 cases need 64-bit JAX, which invad
    never switches on by itself. XLA_FLAGS must be set before jax is imported, so the
    device contract and the mesh tests (jit over sharded batches, shard_map) run in a
    pytest process of their own.
    """
    session.install(".[test,jax]", XDIST)
    x64 = {"JAX_ENABLE_X64": "1"}
    pytest(session, "jax", "tests/test_jax.py", *EVERY_BACKEND, *TWO_WORKERS, env=x64)
    # Two processes joined by jax.distributed, one device each (the test spawns them).
    pytest(session, "jax", "tests/test_jax_multiprocess.py", env=x64)
    two_devices = {**x64, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    pytest(
        session,
        "jax",
        "tests/test_devices.py",
        "tests/test_jax_sharding.py",
        CODE_BLOCKS,  # the docs' JAX blocks, the two-device one included
        # the kit without 64-bit JAX (the test turns x64 off in its own subprocess)
        "tests/test_kit.py::test_the_kit_on_jax_without_64_bit_mode",
        env=two_devices,
    )
    # The single-precision cases ran above (the kit without 64-bit JAX, a subprocess of
    # test_kit): here the double-precision ones, each case a compilation on JAX.
    conformance(session, "jax", "-k", "not float32 and not complex64", *TWO_WORKERS, env=x64)


def cuda_gpu_visible() -> bool:
    """A CUDA GPU is visible: ``nvidia-smi -L`` lists one, or /dev/nvidia0 exists."""
    import os
    import shutil
    import subprocess

    smi = shutil.which("nvidia-smi")
    if smi is not None:
        try:
            listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            pass
        else:
            gpus = [line for line in listed.stdout.splitlines() if line.startswith("GPU ")]
            if listed.returncode == 0 and gpus:
                return True
    return os.path.exists("/dev/nvidia0")


@nox.session(name="tests-cupy")
def tests_cupy(session: nox.Session) -> None:
    """The CuPy backend on a CUDA GPU; skipped before installing anything where none is visible."""
    if not cuda_gpu_visible():
        session.skip(
            "no CUDA GPU visible (nvidia-smi found no device): the CuPy backend's tests need one"
        )
    session.install(".[test,cupy]")  # cupy-cuda12x
    pytest(
        session, "cupy", "tests/test_cupy.py", "tests/test_devices.py", CODE_BLOCKS, *EVERY_BACKEND
    )
    conformance(session, "cupy")


@nox.session(name="tests-dask")
def tests_dask(session: nox.Session) -> None:
    """The Dask backend on a dask.distributed LocalCluster (two worker processes), against
    NumPy; then the conformance kit's oracle replays on it.

    OPENBLAS_NUM_THREADS=1 in this process too, as dask.distributed sets it in its workers:
    the tests compare thousands of tiny LAPACK calls, which OpenBLAS's thread pool slows
    down a hundredfold on a busy 2-core machine.
    """
    session.install(".[test,dask]")
    one_thread = {"OPENBLAS_NUM_THREADS": "1"}
    # test_singular.py is left out: with several singular matrices in several chunks, the
    # error names the first one of the chunk that fails first, not of the whole batch.
    every = [path for path in EVERY_BACKEND if path != "tests/test_singular.py"]
    pytest(session, "dask", "tests/test_dask.py", *every, CODE_BLOCKS, env=one_thread)
    session.run(
        "pytest",
        "--pyargs",
        "invad.testing",
        "--invad-backend",
        "dask",
        "-q",
        "-k",
        "oracle",
        env=one_thread,
    )


@nox.session
def examples(session: nox.Session) -> None:
    """The workloads of docs/examples/ (GP regression, implicit differentiation), which run on
    torch, JAX and NumPy side by side: each script runs and what it prints is checked."""
    session.install(*TORCH_PIN, ".[test,torch,jax]", "matplotlib")
    session.run("pytest", "tests/test_examples.py", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff==0.17.6")  # pinned: a new ruff release may format differently
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("mypy==2.4.1", ".")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site, warnings as errors (op pages generated from the rule contracts).

    docs/benchmarks.md and its plot are the committed output of benchmarks/run_all.py;
    docs/ops/ holds the op pages as committed copies (python docs/hooks.py rewrites them).
    """
    session.install(".[docs]")
    session.run("mkdocs", "build", "--strict", "--site-dir", f"{session.create_tmp()}/site")

"""The test matrix: one session per backend, each in its own environment.

nox                    # every session
nox -s tests-numpy     # one of them
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
]

TORCH_PIN = ("-c", "constraints/torch.txt")


def pytest(session: nox.Session, backend: str, *paths: str) -> None:
    """The project's tests in ``paths``, with ``backend`` as the backend under test."""
    session.run(
        "pytest",
        *(paths or ("tests",)),
        *session.posargs,
        env={"INVAD_TEST_BACKENDS": backend},
    )


def conformance(session: nox.Session, backend: str) -> None:
    """The one command a plugin author runs: invad's conformance kit on ``backend``."""
    session.run("pytest", "--pyargs", "invad.testing", "--invad-backend", backend, "-q")


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
    pytest(session, "array-api-strict", "tests/test_devices.py")


# Issue-tracker name of the same session: a plugin author's view of invad-strict.
nox.session(name="tests-strict-plugin")(tests_strict)


@nox.session(name="tests-autograd-plugin")
def tests_autograd_plugin(session: nox.Session) -> None:
    """The third-party autograd backend: its own tests, then the conformance kit on it."""
    session.install(".[test]", "./plugins/invad-autograd")
    session.run("pytest", "-q", "plugins/invad-autograd", *session.posargs)
    conformance(session, "autograd")


@nox.session(name="tests-torch")
def tests_torch(session: nox.Session) -> None:
    session.install(*TORCH_PIN, ".[test,torch]")
    pytest(session, "torch", "tests/test_conformance.py", "tests/test_torch.py")


@nox.session(name="tests-jax")
def tests_jax(session: nox.Session) -> None:
    session.install(".[test,jax]")
    pytest(session, "jax", "tests/test_conformance.py", "tests/test_jax.py")


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
        session, "cupy", "tests/test_conformance.py", "tests/test_devices.py", "tests/test_cupy.py"
    )


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff==0.17.6")  # pinned: a new ruff release may format differently
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("mypy==2.4.1", ".")
    session.run("mypy")

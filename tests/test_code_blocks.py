"""Every Python code block of README.md and docs/ runs as written.

Blocks of one file run in order in one namespace, as a reader goes down the
page: a block may use what an earlier block of the page defined. A block's
*needs* are the frameworks it imports (torch, jax, cupy) plus those of the
earlier blocks whose names it uses, plus what an HTML comment right above it
says (invisible on the rendered page):

    <!-- test: needs gpu -->                 a CUDA GPU (for CuPy, or the block's torch)
    <!-- test: needs two-gpus -->            two of them
    <!-- test: needs two-jax-devices -->     jax.device_count() >= 2
    <!-- test: raises ValueError -->         the block ends by raising it

Each block runs in the nox session of its framework (``INVAD_TEST_BACKENDS``):
plain NumPy blocks in tests-numpy, torch blocks in tests-torch, JAX blocks in
tests-jax (its two-device run), GPU blocks in tests-cupy, Dask blocks in
tests-dask; elsewhere it is
skipped with the reason. A block runs after the earlier blocks it depends on,
whichever session they belong to.
"""

from __future__ import annotations

import ast
import builtins
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from invad.testing.plugin import env_backends

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>```+|~~~+) *(?P<info>[^\n`]*)$")
MARKER = re.compile(r"^ *<!-- test: (?P<what>.+?) -->$")
#: Imports that make a block need a framework, and the framework.
FRAMEWORKS = {
    "torch": "torch",
    "jax": "jax",
    "cupy": "cupy",
    "cupyx": "cupy",
    "dask": "dask",
    "distributed": "dask",
}
#: The session (backend under test) where a block with these needs runs; "gpu" alone
#: (a GPU, no framework named) is CuPy's.
HOME = {"torch": "torch", "jax": "jax", "two-jax-devices": "jax", "cupy": "cupy", "dask": "dask"}


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    source: str
    markers: list[str]
    needs: set[str] = field(default_factory=set)
    depends: list[int] = field(default_factory=list)  # indices of earlier blocks of the page
    raises: str | None = None

    @property
    def id(self) -> str:
        path = self.path.relative_to(ROOT) if self.path.is_relative_to(ROOT) else self.path.name
        return f"{path}:{self.line}"

    @property
    def home(self) -> str:
        homes = {HOME[n] for n in self.needs if n in HOME}
        if not homes:
            return "cupy" if self.needs & {"gpu", "two-gpus"} else "numpy"
        return homes.pop() if len(homes) == 1 else "+".join(sorted(homes))


def python_blocks(path: Path) -> list[Block]:
    """The ``python`` fenced blocks of a Markdown file, dedented, with the markers above them."""
    lines = path.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence = len(opening["indent"]), opening["fence"]
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == fence), len(lines))
        if opening["info"].split()[:1] in (["python"], ["py"]):
            markers, k = [], i - 1
            while k >= 0 and MARKER.match(lines[k]):
                markers.insert(0, MARKER.match(lines[k])["what"])  # type: ignore[index]
                k -= 1
            body = "\n".join(line[indent:] for line in lines[i + 1 : end])
            blocks.append(Block(path, i + 1, body + "\n", markers))
        i = end + 1
    return blocks


def bound_names(tree: ast.Module) -> set[str]:
    """Names a block binds at module level (not those local to its functions)."""
    names: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            return
        if isinstance(node, ast.Lambda):
            return
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def used_names(tree: ast.Module) -> set[str]:
    return {
        n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)
    } - set(dir(builtins))


def imported_frameworks(tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            modules = [node.module]
        else:
            continue
        found.update(FRAMEWORKS[m.split(".")[0]] for m in modules if m.split(".")[0] in FRAMEWORKS)
    return found


def analyse(blocks: list[Block]) -> list[Block]:
    """Fill in each block's dependencies, needs and expected exception."""
    definer: dict[str, int] = {}  # name -> the last earlier block that bound it
    for index, block in enumerate(blocks):
        tree = ast.parse(block.source, filename=block.id)
        bound = bound_names(tree)
        block.depends = sorted({definer[n] for n in used_names(tree) - bound if n in definer})
        block.needs = imported_frameworks(tree)
        for marker in block.markers:
            what, _, rest = marker.partition(" ")
            if what == "needs":
                block.needs |= {n.strip() for n in rest.split(",")}
            elif what == "raises":
                block.raises = rest.strip()
            else:
                raise ValueError(f"{block.id}: unknown test marker {marker!r}")
        for d in block.depends:
            block.needs |= blocks[d].needs
        definer.update(dict.fromkeys(bound, index))
    return blocks


PAGES = {path: analyse(python_blocks(path)) for path in FILES}
BLOCKS = [(path, i) for path, blocks in PAGES.items() for i in range(len(blocks))]
NAMESPACES: dict[Path, dict[str, object]] = {}
DONE: dict[Path, set[int]] = {}


def gpu_count(framework: str) -> int:
    """How many CUDA GPUs ``framework`` (cupy, torch, jax) sees here."""
    if importlib.util.find_spec(framework) is None:
        return 0
    if framework == "torch":
        import torch

        return int(torch.cuda.device_count())
    if framework == "jax":
        import jax

        return sum(d.platform == "gpu" for d in jax.devices())
    import cupy

    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:  # no driver, no device
        return 0


def skip_reason(block: Block) -> str | None:
    """Why ``block`` does not run in this session, or ``None``."""
    if block.home not in env_backends():
        session = f"tests-{block.home}" if "+" not in block.home else "none: it needs two"
        needs = ", ".join(sorted(block.needs)) or "NumPy only"
        return f"needs {needs}: runs in nox -s {session}"
    gpus = 2 if "two-gpus" in block.needs else int("gpu" in block.needs or block.home == "cupy")
    if gpus and gpu_count(block.home) < gpus:
        return f"needs {gpus} CUDA GPU(s) visible to {block.home}"
    if "two-jax-devices" in block.needs:
        import jax

        if jax.device_count() < 2:
            return "needs two JAX devices: XLA_FLAGS=--xla_force_host_platform_device_count=2"
    return None


def run(path: Path, index: int) -> None:
    """Run block ``index`` of ``path`` after those it depends on (once each)."""
    blocks, done = PAGES[path], DONE.setdefault(path, set())
    namespace = NAMESPACES.setdefault(path, {"__name__": "__docs__"})
    block = blocks[index]
    for d in block.depends:
        if d not in done:
            run(path, d)
    code = compile(block.source, block.id, "exec")
    if block.raises is None:
        exec(code, namespace)
    else:
        expected = eval(block.raises, {**vars(builtins), **namespace})
        with pytest.raises(expected):
            exec(code, namespace)
    done.add(index)


@pytest.mark.parametrize(("path", "index"), BLOCKS, ids=[PAGES[p][i].id for p, i in BLOCKS])
def test_code_block_runs(path: Path, index: int) -> None:
    reason = skip_reason(PAGES[path][index])
    if reason is not None:
        pytest.skip(reason)
    run(path, index)


def test_every_block_has_one_home_session() -> None:
    """A block that needs two frameworks would run in no session."""
    assert BLOCKS, "no Python blocks found"
    homeless = [b.id for blocks in PAGES.values() for b in blocks if "+" in b.home]
    assert not homeless


def test_the_collector_reads_markers_dependencies_and_needs(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nimport numpy as np\na = np.eye(2)\n```\n\n"
        "- in a list:\n\n  ```python\n  import torch\n  t = torch.eye(2)\n  ```\n\n"
        "<!-- test: needs gpu -->\n```python\nx = a @ a\n```\n\n"
        "<!-- test: raises ZeroDivisionError -->\n```py\ny = t.sum() / 0\n```\n\n"
        "```bash\necho not python\n```\n"
    )
    first, second, third, fourth = analyse(python_blocks(page))
    assert (first.needs, first.home, first.depends) == (set(), "numpy", [])
    assert (second.line, second.source) == (8, "import torch\nt = torch.eye(2)\n")
    assert (second.needs, second.home) == ({"torch"}, "torch")
    assert (third.needs, third.home, third.depends) == ({"gpu"}, "cupy", [0])
    assert (fourth.depends, fourth.needs, fourth.raises) == ([1], {"torch"}, "ZeroDivisionError")

"""The docs agree with the code and with each other (their code blocks: test_code_blocks.py)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

from invad import cli
from invad.rules import RULES
from invad.testing import CHECKS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def load_hooks():
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_op_pages_are_those_the_rules_generate():
    hooks = load_hooks()
    assert set(hooks.pages()) == {"ops/index.md", *(f"ops/{op}.md" for op in RULES)}
    stale = hooks.stale()
    assert not stale, f"docs/ops out of date: {stale}; run: python docs/hooks.py"


def test_stale_finds_a_changed_missing_or_stray_op_page(tmp_path):
    hooks = load_hooks()
    hooks.write(tmp_path)
    assert hooks.stale(tmp_path) == []
    (tmp_path / "ops" / "inv.md").write_text("edited by hand\n")
    (tmp_path / "ops" / "solve.md").unlink()
    (tmp_path / "ops" / "gone.md").write_text("an op that no longer exists\n")
    assert hooks.stale(tmp_path) == ["ops/inv.md", "ops/solve.md", "ops/gone.md"]
    hooks.write(tmp_path)
    assert hooks.stale(tmp_path) == [] and not (tmp_path / "ops" / "gone.md").exists()


def test_every_docs_page_is_in_the_nav():
    nav = set(re.findall(r"([\w/.-]+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M))
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    generated_in_nav = {f"ops/{op}.md" for op in RULES}  # added by docs/hooks.py
    assert pages - generated_in_nav <= nav, sorted(pages - generated_in_nav - nav)
    assert nav <= pages, sorted(nav - pages)


def test_cli_page_shows_the_check_table_header_invad_prints():
    page = (DOCS / "cli.md").read_text()
    example = page.split("$ invad check\n", 1)[1].splitlines()
    printed, _ = cli.summarize([])
    assert example[1].split() == printed.splitlines()[0].split() == ["op", *CHECKS]
    assert "native-ad" in example[1]


def install_table(text: str) -> list[str]:
    """The lines of the Markdown table that starts with ``| backend | extra |``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| backend | extra |"))
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[start:end]


def test_readme_and_install_page_show_the_same_install_table():
    readme = install_table((ROOT / "README.md").read_text())
    page = install_table((DOCS / "install.md").read_text())
    assert len(readme) == 2 + 7  # header, rule, seven backends
    assert readme == page


def test_install_commands_install_from_the_clone_everywhere():
    """invad is not on a package index: README and docs say `pip install .[extra]`."""
    texts = [ROOT / "README.md", *DOCS.rglob("*.md")]
    from_index = re.compile(r"pip install [\"']?invad\[")
    # ```text blocks quote program output (backends' messages), not instructions
    prose = {p.name: re.sub(r"```text\n.*?```", "", p.read_text(), flags=re.S) for p in texts}
    offenders = [name for name, text in prose.items() if from_index.search(text)]
    assert not offenders
    for page in (ROOT / "README.md", DOCS / "quickstart.md", DOCS / "install.md"):
        text = page.read_text()
        assert "git clone" in text and "--index-url https://download.pytorch.org/whl/cpu" in text

"""MkDocs hooks for ``make docs``: the recipe pages and examples join the site by themselves.

* every ``recipes_docs/*.md`` page is added to the site as ``recipes/<name>.md`` and
  to the nav under "Recipes" (sorted by title), so a page another engineer adds is
  never left out;
* every ``examples/*.py`` script is copied to ``examples/`` so that the recipe pages'
  links to ``../examples/<script>.py`` work on the site as they do on GitHub;
* ``api/more-recipes.md`` documents every recipe class exported by ``etcdsync``
  (``_EXPORTS``) that the hand-written API pages do not, so a new recipe gets its
  reference without anyone editing the docs.

A link that still points nowhere, or a missing anchor, is a warning, and the build
runs with ``--strict``: it fails.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
RECIPES = ROOT / "recipes_docs"
EXAMPLES = ROOT / "examples"
DOCS = ROOT / "docs"
_TITLE = re.compile(r"^#\s+(.+?)\s*$", re.M)
_DIRECTIVE = re.compile(r"^::: (\S+)", re.M)


def _title(page: Path) -> str:
    match = _TITLE.search(page.read_text(encoding="utf-8"))
    return match.group(1) if match else page.stem


def _recipe_pages() -> list[Path]:
    return sorted(RECIPES.glob("*.md"), key=lambda p: _title(p).lower())


def on_config(config: MkDocsConfig, **kwargs: Any) -> MkDocsConfig:
    nav = config.nav
    if nav is not None:
        nav.append({"Recipes": [{_title(p): f"recipes/{p.name}"} for p in _recipe_pages()]})
    return config


def _exported_recipes() -> list[str]:
    """Dotted paths of the threaded recipe classes that ``etcdsync`` exports."""
    tree = ast.parse((ROOT / "etcdsync" / "__init__.py").read_text(encoding="utf-8"))
    exports: dict[str, str] = {}
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(target, ast.Name) and target.id == "_EXPORTS" and node.value is not None:
            exports = ast.literal_eval(node.value)
    return [
        f"etcdsync{module}.{name}"
        for name, module in sorted(exports.items())
        if module.startswith("._sync.concurrency.")
    ]


def _more_recipes() -> str:
    documented = set()
    for page in (DOCS / "api").glob("*.md"):
        documented.update(_DIRECTIVE.findall(page.read_text(encoding="utf-8")))
    lines = [
        "# More recipes",
        "",
        "Every other recipe class that `etcdsync` exports (threaded flavour; each has an",
        "`Async` twin). Generated from `etcdsync._EXPORTS` when the site is built.",
        "",
    ]
    for path in _exported_recipes():
        if path not in documented:
            lines += [f"::: {path}", ""]
    return "\n".join(lines)


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    files.append(File.generated(config, "api/more-recipes.md", content=_more_recipes()))
    for page in _recipe_pages():
        files.append(File.generated(config, f"recipes/{page.name}", abs_src_path=str(page)))
    for script in sorted(EXAMPLES.glob("*.py")):
        files.append(File.generated(config, f"examples/{script.name}", abs_src_path=str(script)))
    return files

"""Every logger of the library is under ``etcdsync`` (issue 16, item 3).

Read statically: each ``logging.getLogger(...)`` in the package names ``etcdsync`` or a
child of it, and nothing logs through the root logger (``logging.warning(...)``), so
that ``logging.getLogger("etcdsync")`` configures (or silences) all of the library.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "etcdsync"
_ROOT_CALLS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log"}


def _name_prefix(arg: ast.expr) -> str | None:
    """The literal text a logger name starts with (a str or an f-string's head)."""
    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
        return arg.value
    if isinstance(arg, ast.JoinedStr) and arg.values:
        head = arg.values[0]
        if isinstance(head, ast.Constant) and isinstance(head.value, str):
            return head.value
    return None


def test_every_logger_is_under_etcdsync() -> None:
    found, bad = 0, []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "_pb" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            func = node.func
            if not (isinstance(func.value, ast.Name) and func.value.id == "logging"):
                continue
            where = f"{path.relative_to(PACKAGE.parent)}:{node.lineno}"
            if func.attr == "getLogger":
                found += 1
                prefix = _name_prefix(node.args[0]) if node.args else None
                if prefix is None or not (prefix == "etcdsync" or prefix.startswith("etcdsync.")):
                    bad.append(f"{where}: {ast.unparse(node)}")
            elif func.attr in _ROOT_CALLS:
                bad.append(f"{where}: logs through the root logger: {ast.unparse(node)}")
    assert found > 10  # the scan sees the library's loggers
    assert bad == []

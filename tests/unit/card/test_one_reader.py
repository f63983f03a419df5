"""``dualpatch.card`` is the only module that reads model.json: no other module opens, reads or
json-loads a path built from the file's name ("model.json" or ``card.CARD``), directly or through
a variable that holds such a path."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support.common import REPO_ROOT

SRC = REPO_ROOT / "src" / "dualpatch"
READS = {"load", "loads", "read_text", "read_bytes", "open"}


def _card_paths(tree: ast.AST) -> set[str]:
    """Names assigned an expression that mentions the card file, anywhere in the module."""
    names: set[str] = set()
    changed = True
    while changed:  # a = d / "model.json"; b = a -> both
        changed = False
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and _mentions(node.value, names):
                for target in node.targets:
                    for n in ast.walk(target):
                        if isinstance(n, ast.Name) and n.id not in names:
                            names.add(n.id)
                            changed = True
    return names


def _mentions(node: ast.AST, names: set[str]) -> bool:
    return any(
        (isinstance(n, ast.Constant) and n.value == "model.json")
        or (isinstance(n, ast.Name) and (n.id == "CARD" or n.id in names))
        or (isinstance(n, ast.Attribute) and n.attr == "CARD")
        for n in ast.walk(node)
    )


def _reads(call: ast.Call, names: set[str]) -> bool:
    """open(P), json.load(s)(P...), P.read_text(), P.read_bytes(), P.open() of a card path P."""
    func = call.func
    if isinstance(func, ast.Name) and func.id == "open":
        return any(_mentions(a, names) for a in call.args)
    if not (isinstance(func, ast.Attribute) and func.attr in READS):
        return False
    if func.attr in ("load", "loads"):
        return any(_mentions(a, names) for a in call.args)
    return _mentions(func.value, names)


def offenders(src: Path) -> list[str]:
    """``file:line`` of every read of the card outside ``card.py``."""
    found = []
    for path in sorted(src.rglob("*.py")):
        if path == src / "card.py":
            continue
        tree = ast.parse(path.read_text())
        names = _card_paths(tree)
        found += [
            f"{path.relative_to(src)}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and _reads(node, names)
        ]
    return sorted(set(found))


def test_only_the_card_module_reads_model_json():
    assert (SRC / "card.py").is_file()
    assert offenders(SRC) == []


def test_the_check_finds_a_second_reader(tmp_path):
    """The checker itself: each way of reading the card in another module is reported, and
    merely naming the file (a size, a help text) is not."""
    pkg = tmp_path / "dualpatch"
    pkg.mkdir()
    files = {
        "card.py": 'CARD = "model.json"\nmeta = json.loads((d / CARD).read_text())\n',
        "a.py": 'import json\nmeta = json.load(open(d / "model.json"))\n',
        "b.py": "from .card import CARD\nx = (d / CARD).read_bytes()\n",
        "c.py": 'p = d / "model.json"\nq = p\nmeta = json.loads(q.read_text())\n',
        "d.py": 'import json\nwith (d / "model.json").open() as f:\n    json.load(f)\n',
        "e.py": '"""Reads model.json? No."""\nsize = (d / "model.json").stat().st_size\n',
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    assert offenders(pkg) == ["a.py:2", "b.py:2", "c.py:3", "d.py:2"]

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
    """Names assigned a path to the card file, anywhere in the module."""
    functions = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
    names: set[str] = set()
    while True:  # a = d / "model.json"; b = a; f(b) with def f(p) -> a, b, p
        before = len(names)
        for node in ast.walk(tree):
            for target, value in _bindings(node, functions):
                if _is_path(value, names):
                    names.add(target)
        if len(names) == before:
            return names


def _bindings(node: ast.AST, functions: dict[str, ast.FunctionDef]) -> list[tuple[str, ast.AST]]:
    """(name, value) pairs that ``node`` binds: assignments (tuples element by element) and the
    parameters of this module's functions at a call."""
    if isinstance(node, ast.Assign):
        pairs = []
        for target in node.targets:
            if isinstance(target, ast.Name):
                pairs.append((target.id, node.value))
            elif isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                pairs += [
                    (t.id, v)
                    for t, v in zip(target.elts, node.value.elts, strict=False)
                    if isinstance(t, ast.Name)
                ]
        return pairs
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        func = functions.get(node.func.id)
        if func is not None:
            params = [a.arg for a in func.args.posonlyargs + func.args.args]
            return list(zip(params, node.args, strict=False))
    return []


def _is_path(node: ast.AST, names: set[str]) -> bool:
    """A path to the card: its name, a name holding it, ``d / <those>``, ``Path(<those>)``; not
    any expression that merely passes one to a function (``meta = parse(d / CARD)``)."""
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return _is_path(node.left, names) or _is_path(node.right, names)
    if isinstance(node, ast.Call):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        return name in ("Path", "joinpath", "join") and any(_is_path(a, names) for a in node.args)
    return (
        (isinstance(node, ast.Constant) and node.value == "model.json")
        or (isinstance(node, ast.Name) and (node.id == "CARD" or node.id in names))
        or (isinstance(node, ast.Attribute) and node.attr == "CARD")
    )


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
        "f.py": "meta = build(d / CARD)\nmeta = json.loads(json.dumps(meta))\n",
        "g.py": 'p = Path(os.path.join(d, "model.json"))\nmeta = json.load(p.open())\n',
        "h.py": "def read(m):\n    return json.loads(m.read_text())\n\nread(d / CARD)\n",
        "i.py": 'a, b = d / "model.json", d / "x"\nb.read_text()\na.read_text()\n',
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    want = ["a.py:2", "b.py:2", "c.py:3", "d.py:2", "g.py:2", "h.py:2", "i.py:3"]
    assert offenders(pkg) == want

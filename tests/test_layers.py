"""The library's layers: every import in `hybnn_cli` (lazy ones inside functions included) goes to
its own layer or one below it, and `hybnn_kernels` imports neither torch nor `hybnn_cli`."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "hybnn_cli"
LAYERS = {  # subpackage → layer; the top-level modules are layer 0
    "data": 1, "models": 2, "codes": 3, "train": 4, "deploy": 5, "fed": 6, "continual": 6,
    "bench": 7, "study": 8, "cli": 9,
}
TOP = 0


def layer_of(module: str) -> int:
    """`hybnn_cli.a.b` → the layer of `a` (a subpackage) or 0 (a top-level module)."""
    parts = module.split(".")
    if parts[1:] == ["__main__"]:  # `python -m hybnn_cli` runs the command line
        return LAYERS["cli"]
    return LAYERS.get(parts[1], TOP) if len(parts) > 1 else TOP


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
            if node.module == "hybnn_cli":  # `from hybnn_cli import x`: x is the module
                found.extend(f"hybnn_cli.{a.name}" for a in node.names if a.name != "__version__")
        elif isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
    return found


def module_name(path: Path, src: Path = SRC) -> str:
    rel = path.relative_to(src.parent).with_suffix("")
    return ".".join(p for p in rel.parts if p != "__init__")


def upward_imports(src: Path = SRC) -> list[str]:
    bad = []
    for path in sorted(src.rglob("*.py")):
        me = module_name(path, src)
        for target in imports(path):
            if target.startswith("hybnn_cli.") and layer_of(target) > layer_of(me):
                bad.append(f"{me} imports {target}")
            if layer_of(me) == 6 and target.startswith("hybnn_cli.") and target.split(".")[1] in (
                    "fed", "continual") and target.split(".")[1] != me.split(".")[1]:
                bad.append(f"{me} imports its sibling {target}")
    return bad


def test_nothing_imports_upward():
    assert upward_imports() == []


def test_the_layer_check_catches_an_upward_import(tmp_path):
    pkg = tmp_path / "hybnn_cli"
    (pkg / "data").mkdir(parents=True)
    (pkg / "data" / "bad.py").write_text("def f():\n    from hybnn_cli.train.stages import x\n")
    (pkg / "models").mkdir()
    (pkg / "models" / "ok.py").write_text("from hybnn_cli.data.datasets import load_split\n")
    assert upward_imports(pkg) == ["hybnn_cli.data.bad imports hybnn_cli.train.stages"]


def test_every_subpackage_has_a_layer_and_says_what_it_may_import():
    for init in sorted(SRC.glob("*/__init__.py")):
        assert init.parent.name in LAYERS, f"{init.parent.name} has no layer in this test"
        assert "May import" in init.read_text(), f"{init} does not say what it may import"


def test_the_top_level_holds_at_most_ten_modules():
    assert len(list(SRC.glob("*.py"))) <= 10


def test_module_names_are_used_once():
    names = [p.stem for p in SRC.rglob("*.py") if p.stem not in ("__init__", "__main__")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages.isdisjoint(names), "a module is named like a subpackage"


def test_kernels_import_neither_torch_nor_hybnn_cli():
    for path in sorted((ROOT / "kernels" / "hybnn_kernels").rglob("*.py")):
        for target in imports(path):
            root = target.split(".")[0]
            assert root not in ("torch", "hybnn_cli"), f"{path.name} imports {target}"

"""No function is longer than 80 lines (the kernels' generated code aside): a long function is
several ideas that want names."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 80
# code that writes code: the register tile's kernel is generated from a template per CPU variant
GENERATED = {("kernels/hybnn_kernels/tile.py", "_make_tile")}


def long_functions(paths, root: Path = ROOT) -> list[str]:
    found = []
    for path in paths:
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > LIMIT and (rel, node.name) not in GENERATED:
                    found.append(f"{rel}:{node.lineno} {node.name} ({length} lines)")
    return found


def test_no_function_is_longer_than_80_lines():
    paths = [p for d in ("src", "kernels", "benchmarks") for p in sorted((ROOT / d).rglob("*.py"))]
    assert long_functions(paths) == []


def test_the_length_check_catches_a_long_function(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(LIMIT))
    path = tmp_path / "probe.py"
    path.write_text(f"def f():\n{body}\n\ndef g():\n    return 1\n")
    assert long_functions([path], tmp_path) == [f"probe.py:1 f ({LIMIT + 1} lines)"]

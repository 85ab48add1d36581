"""The tree says what each part is: the models apart from the pipeline, one owner of the record types, no import
circles, and every command the README writes still runs."""

import ast
import re
import runpy
import subprocess
import sys

import pytest

from conftest import REPO

PACKAGE = REPO / "extract"


def _module_name(path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path, top_level_only: bool = False) -> set[str]:
    """The extract modules a file imports (`from extract.models import synchformer` counts as extract.models.synchformer),
    inside functions too unless `top_level_only`."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            assert node.level == 0, f"{path}: relative import of {node.module}"
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name == "extract" or name.startswith("extract.")}


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def test_a_model_imports_nothing_of_the_pipeline():
    models = [path for name, path in MODULES.items() if name.startswith("extract.models.")]
    assert {_module_name(path).rsplit(".", 1)[-1] for path in models} >= {
        "beats_conformer_bart", "synchformer", "generation", "convert", "random_models"}
    for path in models:
        foreign = sorted(name for name in _imports(path) if not name.startswith("extract.models"))
        assert not foreign, f"{path.relative_to(REPO)} imports {foreign}"


def test_the_schema_owns_the_record_types_and_imports_no_records():
    assert not any(name.startswith("extract.records") for name in _imports(MODULES["extract.schema"]))
    assert "extract.schema.BaseRecord" in _imports(MODULES["extract.records"])


@pytest.mark.parametrize("top_level_only", [True, False], ids=["module level", "inside functions too"])
def test_no_import_circle(top_level_only):
    graph = {name: {imported for imported in _imports(path, top_level_only=top_level_only) if imported in MODULES and imported != name}
             for name, path in MODULES.items()}
    done, path = set(), []

    def visit(name):
        if name in path:
            raise AssertionError("import circle: " + " -> ".join(path[path.index(name):] + [name]))
        if name in done:
            return
        path.append(name)
        for imported in sorted(graph[name]):
            visit(imported)
        path.pop()
        done.add(name)

    for name in sorted(graph):
        visit(name)


def _readme_commands() -> list[list[str]]:
    """Each `python -m extract...` tool the README names, and each benchmark it names, as a command asking for help."""
    readme = (REPO / "README.md").read_text()
    tools = set(re.findall(r"python -m (extract(?:\.\w+)?)", readme)) | set(re.findall(r"`(extract\.convert)\b", readme))
    benchmarks = set(re.findall(r"python -m extract\.bench (\w+)", readme))
    return [[tool] for tool in sorted(tools)] + [["extract.bench", name] for name in sorted(benchmarks)]


def test_the_readme_names_the_tools_and_benchmarks():
    commands = _readme_commands()
    for expected in (["extract"], ["extract.export"], ["extract.report"], ["extract.select"], ["extract.convert"],
                     ["extract.launch"], ["extract.bench", "generation"], ["extract.bench", "llava_video"]):
        assert expected in commands


@pytest.mark.parametrize("command", [c for c in _readme_commands() if len(c) == 1], ids=" ".join)
def test_every_tool_the_readme_writes_starts(command):
    result = subprocess.run([sys.executable, "-m", *command, "--help"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    if command == ["extract"]:  # Hydra's help, with the page written for this program (test_cli says what it holds)
        assert result.stdout.startswith("extract: ") and "Usage:" in result.stdout
    elif command == ["extract.launch"]:
        assert result.stdout.startswith("`python -m extract.launch [torchrun options] -- [extract arguments]`")
    else:
        assert f"usage: python -m {command[0]}" in result.stdout, result.stdout[:500]


@pytest.mark.parametrize("command", [c for c in _readme_commands() if len(c) == 2], ids=" ".join)
def test_every_benchmark_the_readme_writes_starts(command, monkeypatch, capsys):
    """As `python -m extract.bench NAME --help` runs it (runpy is what -m uses), in this process: quicker."""
    monkeypatch.setattr(sys, "argv", [command[0], command[1], "--help"])
    with pytest.raises(SystemExit) as exit:
        runpy.run_module(command[0], run_name="__main__", alter_sys=True)
    assert exit.value.code == 0
    assert f"usage: python -m extract.bench {command[1]}" in capsys.readouterr().out


def test_the_mutation_plan_follows_the_tree():
    """Every planned mutation's snippet occurs once in its file and every test a room names exists: a move that
    left the plan behind would make `tests/mutate.py` report stale mutations instead of checking the tests."""
    from mutations import ROOMS

    for room, plan in ROOMS.items():
        for path, snippet, *_ in plan["mutations"]:
            assert (REPO / path).read_text().count(snippet) == 1, (room, path, snippet[:80])
        for test in plan["tests"]:
            path, _, name = test.partition("::")
            assert (REPO / path).is_file(), (room, test)
            assert not name or f"def {name.split('[')[0]}(" in (REPO / path).read_text(), (room, test)


def test_what_does_not_decode_loads_no_ffmpeg():
    """A GPU machine may have no FFmpeg libraries: the benchmarks, the models and the heads import without torchcodec
    or PyAV, which load on the first decode."""
    code = ("import sys; import extract.bench.__main__, extract.runner, extract.heads.llava_video, extract.heads.internvl, "
            "extract.models.generation, extract.models.random_models; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torchcodec', 'av')))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0 and loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr[-2000:]

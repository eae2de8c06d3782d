"""The benchmark as a package of its own: its extra, its boundary, its Java command."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

import channelcast
from channelcast.bench import DEFAULT_OUTPUT, SCENARIOS
from channelcast.bench.java import check_kafka_libs, java_command, kafka_version
from channelcast.cli import bench as bench_command
from channelcast.cli.main import main
from channelcast.errors import ConfigError

SRC = Path(channelcast.__file__).resolve().parent


@pytest.mark.parametrize("module", ["hdrh", "matplotlib"])
def test_without_the_bench_extra_the_command_says_what_to_install(
        module: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    # As if the extra were not installed: importing the module fails, and the benchmark
    # package is imported afresh by the command.
    monkeypatch.setitem(sys.modules, module, None)
    for name in [n for n in sys.modules if n == "channelcast.bench" or
                 n.startswith("channelcast.bench.")]:
        monkeypatch.delitem(sys.modules, name)
    code = main(["bench", "--quick", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: channelcast bench needs the 'bench' extra")
    assert f"({module} is not installed)" in err
    assert "pip install 'channelcast[bench]'" in err
    assert len(err.strip().splitlines()) == 1  # one line, no traceback
    assert list(tmp_path.iterdir()) == []


def test_help_and_other_commands_do_not_need_the_extra(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "hdrh", None)
    for name in [n for n in sys.modules if n == "channelcast.bench" or
                 n.startswith("channelcast.bench.")]:
        monkeypatch.delitem(sys.modules, name)
    assert main(["bench", "--help"]) == 0
    assert "--kafka-libs" in capsys.readouterr().out
    assert "channelcast.bench" not in sys.modules  # the help did not import it


def test_the_command_help_names_what_the_package_defines() -> None:
    # cli/bench.py does not import the package for its help text: the copies must agree.
    assert bench_command.SCENARIO_NAMES == SCENARIOS
    assert bench_command.OUTPUT == DEFAULT_OUTPUT


def _imports(tree: ast.AST) -> list[tuple[str, ast.AST | None]]:
    """(imported module, the function it is imported in or None) for every import."""
    found: list[tuple[str, ast.AST | None]] = []

    def visit(node: ast.AST, function: ast.AST | None) -> None:
        for child in ast.iter_child_nodes(node):
            inner = child if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) \
                else function
            if isinstance(child, ast.Import):
                found.extend((alias.name, function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module:
                found.append((child.module, function))
                found.extend((f"{child.module}.{alias.name}", function)
                             for alias in child.names)
            visit(child, inner)

    visit(tree, None)
    return found


def test_the_product_never_imports_the_benchmark() -> None:
    lazy_in_cli = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith("bench/"):
            continue
        for module, function in _imports(ast.parse(path.read_text(), rel)):
            # Nothing in the installed package reaches for the repository's scripts.
            assert module.split(".")[0] != "kafka_local", rel
            if module != "channelcast.bench" and not module.startswith("channelcast.bench."):
                continue
            # The one exception: the command module, inside the command function.
            assert rel == "cli/bench.py", f"{rel} imports {module}"
            assert function is not None, f"{rel} imports {module} at module level"
            lazy_in_cli.append(module)
    assert lazy_in_cli  # the test sees the import it allows


def test_the_benchmark_never_reaches_for_repository_scripts() -> None:
    for path in sorted((SRC / "bench").rglob("*.py")):
        text = path.read_text()
        for module, _function in _imports(ast.parse(text, path.name)):
            assert module.split(".")[0] != "kafka_local", path.name
        assert "spec_from_file_location" not in text, path.name
        assert "__file__" not in text, path.name


def test_java_command_puts_every_jar_of_the_folder_on_the_classpath(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    java_home = tmp_path / "jdk"
    (java_home / "bin").mkdir(parents=True)
    (java_home / "bin" / "java").write_bytes(b"")
    monkeypatch.setenv("JAVA_HOME", str(java_home))
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "kafka-clients-9.8.7.jar").write_bytes(b"")
    cmd = java_command(libs, "org.apache.kafka.tools.ProducerPerformance", "--topic", "t",
                       heap="512m")
    assert cmd == [str(java_home / "bin" / "java"), "-Xmx512m", "-cp", f"{libs.resolve()}/*",
                   "org.apache.kafka.tools.ProducerPerformance", "--topic", "t"]
    assert kafka_version(libs) == "9.8.7"
    assert kafka_version(None).startswith("unknown")


@pytest.mark.parametrize("jars", [False, True])
def test_a_folder_without_kafka_jars_is_a_config_error(tmp_path: Path, jars: bool) -> None:
    libs = tmp_path / "libs"
    if jars:  # a folder, but not Kafka's
        libs.mkdir()
        (libs / "other-1.0.jar").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"^--kafka-libs: "):
        check_kafka_libs(libs)

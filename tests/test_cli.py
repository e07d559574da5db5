import subprocess
import sys

from structnets.cli import build_parser, main


def test_help_lists_the_subcommands():
    text = build_parser().format_help()
    assert "palindrome" in text


def test_console_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "structnets", "--version"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith("structnets ")


def test_bad_option_value_is_a_clear_error(tmp_path, capsys):
    code = main(["palindrome", "--cell", "lstm", "--steps", "0", "--out", str(tmp_path / "run")])
    assert code == 2
    assert "error" in capsys.readouterr().err


_WITHOUT_EXTRAS = """
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("rdkit", "shapely"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name.split(".")[0])
sys.meta_path.insert(0, Missing())
"""


def test_the_core_installs_without_the_field_extras():
    # The core install has no rdkit and no shapely: everything but chem and lidar imports,
    # those two say which extra to install, and their commands say it too.
    script = (
        _WITHOUT_EXTRAS
        + """
import structnets, structnets.models, structnets.train, structnets.graphs
import structnets.physics.simulate, structnets.text.charlm, structnets.text.sentiment, structnets.sequences.palindrome
for field, extra in (("chem", "chem"), ("lidar", "lidar")):
    try:
        __import__("structnets." + field)
    except ImportError as error:
        assert f"pip install 'structnets[{extra}]'" in str(error), error
    else:
        raise AssertionError(field + " imported without its extra")
from structnets.cli import main
assert main(["molprop", "train", "--dataset", "esol", "--out", "x"]) == 2
assert main(["detect", "train"]) == 2
print("ok")
"""
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    assert "structnets molprop: error: structnets.chem needs rdkit" in result.stderr
    assert "structnets detect: error: structnets.lidar needs shapely" in result.stderr

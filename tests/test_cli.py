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

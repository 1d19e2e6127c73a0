"""The installed ``lir-robust`` command: every subcommand is a module of the package with the same front door as the
scripts of a checkout, and the dispatcher's own errors are one line with exit status 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


from lir_robust.commands import main as entry

ROOT = Path(__file__).resolve().parents[1]


def test_every_subcommand_is_a_module_with_a_parser_and_a_main():
    for name in entry.COMMANDS:
        module = entry.command_module(name)
        assert callable(module.main) and callable(module.build_parser), name
        assert module.build_parser().format_help().strip(), name


def test_every_script_of_a_checkout_wraps_its_subcommand():
    """train/ and eval/ scripts hold no logic: each imports its command's main (and nothing is left unlisted)."""
    listed = {script for _, _, script in entry.COMMANDS.values()}
    on_disk = {str(path.relative_to(ROOT)) for folder in ("train", "eval") for path in (ROOT / folder).glob("*.py")}
    assert listed == on_disk
    for name, (module, _, script) in entry.COMMANDS.items():
        text = (ROOT / script).read_text()
        assert f"from lir_robust.commands.{module} import main" in text, script
        assert len([line for line in text.splitlines() if line.strip() and not line.startswith("#")]) < 40, script


def test_help_lists_every_command_and_an_unknown_one_is_one_line(capsys):
    assert entry.main(["--help"]) == 0
    listed = capsys.readouterr().out
    assert all(f"  {name} " in listed for name in entry.COMMANDS)
    assert entry.main(["sweeep"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("lir-robust: error: unknown command 'sweeep'") and "sweep" in error[0]
    assert entry.main([]) == 2


def test_a_subcommand_error_names_the_subcommand(tmp_path):
    """``python -m lir_robust.commands.main synthetic ...`` (what the console script runs) refuses a bad option in one
    line prefixed with the subcommand, before anything is written."""
    command = [sys.executable, "-m", "lir_robust.commands.main", "synthetic", "--lengths", "4", "--out", str(tmp_path / "out")]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith("lir-robust synthetic: error: ") and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()

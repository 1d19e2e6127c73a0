"""lir_robust.studies.variants (eval/finetune_all.py): the dev / held-out split of the test queries and the recipe guard (no training here)."""

from __future__ import annotations

import json

import pytest

from lir_robust.commands import finetune_all as finetune_all_command
from lir_robust.commands.cli import UserError, run_command
from lir_robust.studies import variants as finetune_all


def test_dev_and_held_out_halves_alternate_in_numeric_order():
    dev, held_out = finetune_all.dev_heldout_split(["10", "2", "1", "3", "9"])
    assert dev == ["1", "3", "10"] and held_out == ["2", "9"]
    means = finetune_all.split_means({"1": 1.0, "2": 0.0, "3": 1.0, "4": 0.0})
    assert means == {"all": 0.5, "dev": 1.0, "held_out": 0.0}


def test_recipe_guard(tmp_path):
    recipe = dict(finetune_all.RECIPE, extra=[])
    finetune_all.check_recipe(tmp_path / "a", recipe)
    finetune_all.check_recipe(tmp_path / "a", recipe)  # same recipe: runs are reused
    assert json.loads((tmp_path / "a" / "recipe.json").read_text()) == recipe
    with pytest.raises(UserError, match=r"another recipe \(differs in \['lr'\]\)"):
        finetune_all.check_recipe(tmp_path / "a", dict(recipe, lr=1.0))
    (tmp_path / "old" / "maxsim").mkdir(parents=True)
    (tmp_path / "old" / "maxsim" / "summary.json").write_text("{}")
    with pytest.raises(UserError, match="without a recipe.json"):
        finetune_all.check_recipe(tmp_path / "old", recipe)


def test_bad_options_fail_clearly(tmp_path, capsys):
    assert run_command(finetune_all_command.main, ["--out", str(tmp_path), "--pseudo-queries", "queries"]) == 2
    assert "invalid choice: 'queries'" in capsys.readouterr().err


def test_paired_gain_is_the_mean_difference_with_its_standard_error():
    before = {"1": 0.5, "2": 0.5, "3": 0.5, "4": 0.5}
    after = {"1": 0.7, "2": 0.5, "3": 0.5, "4": 0.3}
    gains = finetune_all.paired_gain(after, before)
    assert gains["dev"] == pytest.approx((0.1, 0.1)) and gains["held_out"] == pytest.approx((-0.1, 0.1))
    assert gains["all"][0] == pytest.approx(0.0)

"""The quantization recipe: each bad setting is one line naming its CLI option, raised before any file is
read; the CLI's defaults are the recipe's; a precision with keywords and a recipe mean the same thing."""

import dataclasses

import pytest

from jflow.calibration.quantize import quantize_artifact
from jflow.calibration.recipe import QuantRecipe
from jflow.cli import main
from jflow.errors import InputError

BAD = [
    ({"precision": "int2"}, "--precision must be one of int8, int4, got 'int2'"),
    ({"method": "magic"}, "--method must be one of minmax, entropy, percentile, got 'magic'"),
    ({"block_size": 24}, "--block-size must be a power of two >= 16, got 24"),
    ({"block_size": 8}, "--block-size must be a power of two >= 16, got 8"),
    ({"smooth": 1.0}, "--smooth must be a migration strength in [0, 1) (0: off), got 1.0"),
    ({"smooth": "0.5"}, "--smooth must be a migration strength in [0, 1) (0: off), got '0.5'"),
    ({"keep_float": ("down", "qkv")}, "--keep-float takes roles among down, o or GEMM names (layers.3.down, lm_head; "
                                      "comma-separated), none or measured, got ('down', 'qkv')"),
    ({"keep_float": "down"}, "--keep-float takes roles among down, o or GEMM names (layers.3.down, lm_head; "
                             "comma-separated), none or measured, got 'down'"),
    ({"float_budget": 1.5}, "--float-budget must be a share in [0, 1] of the layers' GEMM weights, got 1.5"),
    ({"symmetric": False}, "jflow writes symmetric int4 only"),
    ({"exclude": "layers.0.q_proj"}, "exclude takes a tuple of node names"),
    ({"samples": 0}, "--samples must be a whole number >= 1, got 0"),
    ({"steps": 2.5}, "--steps must be a whole number >= 1, got 2.5"),
]


@pytest.mark.parametrize("settings,message", BAD, ids=[m.split()[0] for _, m in BAD])
def test_each_bad_setting_is_one_line_naming_its_option(settings, message):
    settings = dict(settings)
    with pytest.raises(InputError) as caught:
        QuantRecipe.of(settings.pop("precision", "int8"), **settings)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("settings,message", BAD[:3], ids=["precision", "method", "block-size"])
def test_quantize_artifact_checks_the_recipe_before_reading_the_artifact(settings, message, tmp_path):
    # The source does not exist: a check made after opening it would say "not a jflow artifact" instead.
    settings = dict(settings)
    with pytest.raises(InputError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        quantize_artifact(tmp_path / "missing", tmp_path / "out", settings.pop("precision", "int8"), **settings)
    assert not (tmp_path / "out").exists()


def test_a_precision_with_keywords_is_the_recipe_they_spell():
    recipe = QuantRecipe("int4", block_size=64, samples=2, keep_float=["down"])
    assert QuantRecipe.of("int4", block_size=64, samples=2, keep_float=("down",)) == recipe
    assert recipe.keep_float == ("down",) and hash(recipe) == hash(QuantRecipe.of(recipe))  # lists become tuples
    assert QuantRecipe.of(recipe, block_size=128) == dataclasses.replace(recipe, block_size=128)
    with pytest.raises(InputError, match="--block-size"):
        QuantRecipe.of(recipe, block_size=100)  # a changed field is checked too
    with pytest.raises(dataclasses.FrozenInstanceError):
        recipe.block_size = 16


def test_the_cli_defaults_are_the_recipes():
    params = {p.name: p.default for p in main.commands["quantize"].params}
    defaults = QuantRecipe("int8")
    for field in ("samples", "method", "block_size", "steps", "smooth", "float_budget", "int8_budget", "ort_int8"):
        assert params[field] == getattr(defaults, field), field
    assert tuple(params["keep_float"].split(",")) == defaults.keep_float


def test_an_artifact_is_never_quantized_with_node_exclusions(tmp_path):
    with pytest.raises(InputError, match="keeps GEMMs float by role"):
        quantize_artifact(tmp_path / "missing", tmp_path / "out", "int8", exclude=("layers.0.mlp.down_proj",))

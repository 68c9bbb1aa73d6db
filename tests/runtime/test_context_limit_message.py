"""A question that does not fit says the limit plainly: how many tokens it takes, how many are allowed (fewer
than max_context: the answer needs a position), and by how much to shorten it."""

import pytest
from click.testing import CliRunner
from PIL import Image

from jflow.cli import main
from jflow.errors import InputError
from jflow.runtime.pipeline import Pipeline


@pytest.fixture(scope="module")
def pipe(tiny_artifact):
    with Pipeline.load(tiny_artifact) as p:
        yield p


def _question(pipe, tokens):
    """A question whose prompt, with the image, takes exactly `tokens` tokens (the tiny tokenizer: 'a ' each)."""
    for n in range(1, 2000):
        question = "a " * n
        if len(pipe.tokenizer.understanding_ids(question)) == tokens:
            return question
    raise AssertionError(f"no question of {tokens} tokens")


def test_a_prompt_of_exactly_max_context_tokens_says_how_many_are_allowed(pipe, photo):
    context = pipe.limits["max_context"]  # 1024 in the tiny artifact
    with pytest.raises(InputError) as e:
        pipe.answer(photo, _question(pipe, context))
    assert str(e.value).startswith(f"the question and image take {context} tokens, but this artifact allows at "
                                   f"most {context - 1} (fewer than its max_context of {context}")
    assert "shorten the question by 1 token(s)" in str(e.value)
    assert pipe.answer(photo, _question(pipe, context - 1), max_new_tokens=1) is not None  # the limit itself runs


def test_the_cli_says_the_same(pipe, photo, tiny_artifact, tmp_path):
    Image.fromarray(photo).save(tmp_path / "photo.png")
    question = _question(pipe, pipe.limits["max_context"] + 5)
    result = CliRunner().invoke(main, ["chat", str(tiny_artifact), "--image", str(tmp_path / "photo.png"), question])
    assert result.exit_code == 1 and "allows at most 1023 (fewer than its max_context of 1024" in result.output
    assert "shorten the question by 6 token(s)" in result.output and "Traceback" not in result.output

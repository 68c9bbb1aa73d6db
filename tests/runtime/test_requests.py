"""jflow.runtime.requests: the checks the reference and the runtime share, with messages naming the argument."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jflow.errors import InputError
from jflow.runtime.ode import initial_noise
from jflow.runtime.requests import (MAX_CFG_WEIGHT, check_generation_args, check_noise, pair_images_questions,
                                    prompt_list)

IMG = np.zeros((8, 8, 3), np.uint8)


def test_prompt_list_accepts_a_str_or_a_list_of_str():
    assert prompt_list("a cat") == ["a cat"]
    assert prompt_list(["a", "b"]) == ["a", "b"] and prompt_list(("a",)) == ["a"]


@pytest.mark.parametrize("prompt, message", [
    (123, "prompt must be a str or a list of str, got int"),
    (b"abc", "prompt must be a str or a list of str, got bytes"),
    (None, "got NoneType"),
    ([], "no prompt given"),
    (["a cat", 3], r"prompt\[1\] must be a str, got int"),
    (["a cat", b"x"], r"prompt\[1\] must be a str, got bytes"),
    ("   ", "the prompt is empty"),
    (["a cat", " \n"], r"prompt\[1\] is empty"),
])
def test_prompt_list_refuses_with_the_argument_named(prompt, message):
    with pytest.raises(InputError, match=message):
        prompt_list(prompt)


def test_pair_images_questions_accepts_paths_pil_and_arrays(tmp_path):
    pil = Image.new("RGB", (4, 4))
    assert pair_images_questions(IMG, "q") == ([IMG], ["q"])
    assert pair_images_questions([str(tmp_path), Path(tmp_path), pil], ["a", "b", "c"])[1] == ["a", "b", "c"]


@pytest.mark.parametrize("images, questions, message", [
    (IMG, None, "questions must be a str or a list of str, got NoneType"),
    (IMG, 5, "got int"),
    (IMG, b"what?", "got bytes"),
    ([IMG, IMG], ["q", None], r"questions\[1\] must be a str, got NoneType"),
    ([IMG, IMG], ["q", "  "], r"questions\[1\] is empty"),
    (IMG, "", "the question is empty"),
    (None, "q", "image must be a file path, PIL image or HxWxC array, got NoneType"),
    (b"\x89PNG", "q", "got bytes"),
    ([IMG, 7], ["a", "b"], r"images\[1\] must be a file path, PIL image or HxWxC array, got int"),
    ([IMG, IMG], ["q"], r"2 image\(s\) for 1 question"),
])
def test_pair_images_questions_refuses_with_the_argument_named(images, questions, message):
    with pytest.raises(InputError, match=message):
        pair_images_questions(images, questions)


# --- a lone surrogate (from a JSON "\\ud800" escape, or undecodable bytes in argv): issue 18, point 12 ----

@pytest.mark.parametrize("call, message", [
    (lambda: prompt_list("a cat \ud800"), r"the prompt is not valid Unicode text: character 6 is a lone "
                                            r"surrogate \('\\ud800'\)"),
    (lambda: prompt_list(["a cat", "x\udcff"]), r"prompt\[1\] is not valid Unicode text: character 1"),
    (lambda: pair_images_questions(IMG, "\udfffwhat?"), r"the question is not valid Unicode text: character 0"),
    (lambda: pair_images_questions([IMG, IMG], ["q", "why\ud83d"]), r"questions\[1\] is not valid Unicode text"),
])
def test_a_lone_surrogate_is_refused_by_name(call, message):
    with pytest.raises(InputError, match=message):
        call()


def test_surrogate_pairs_written_properly_are_fine():
    assert prompt_list("a cat \U0001f600") == ["a cat \U0001f600"]
    assert pair_images_questions(IMG, "what? \u00e9")[1] == ["what? \u00e9"]


@pytest.mark.parametrize("cfg", [1e300, MAX_CFG_WEIGHT + 0.5, float("nan"), float("inf"), -1.0, True, "2"])
def test_cfg_outside_the_documented_range_is_refused(cfg):
    with pytest.raises(InputError, match=f"cfg weight must be a number from 0 to {MAX_CFG_WEIGHT:g}"):
        check_generation_args(30, cfg)


def test_cfg_range_ends_are_allowed():
    check_generation_args(1, 0.0)
    check_generation_args(1, MAX_CFG_WEIGHT)
    check_generation_args(1, np.float32(2.0))


def test_check_noise():
    good = initial_noise(0, 2, 4)
    np.testing.assert_array_equal(check_noise(good.astype(np.float64), good.shape), good)
    bad = good.copy()
    bad[1, 0, 0, 0] = np.nan
    bad[0, 3, 1, 2] = np.inf
    with pytest.raises(InputError, match="noise has 2 non-finite value"):
        check_noise(bad, good.shape)
    with pytest.raises(InputError, match="non-finite"):
        check_noise(np.full(good.shape, 1e300), good.shape)  # overflows float32
    with pytest.raises(InputError, match=r"noise must be \[2, 4, 4, 4\], got \[1, 4, 4, 4\]"):
        check_noise(good[:1], good.shape)
    with pytest.raises(InputError, match="noise must be an array of real numbers"):
        check_noise(np.full(good.shape, "x"), good.shape)


@pytest.mark.parametrize("seed", [-1, 2.5, "7", True])
def test_bad_seed_is_refused(seed):
    with pytest.raises(InputError, match="seed must be a whole number >= 0"):
        initial_noise(seed, 1, 4)

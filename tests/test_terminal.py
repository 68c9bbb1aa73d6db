"""Control characters in answers: the command line escapes them, the API keeps them (issue 18, point 23)."""

import re

import pytest
from click.testing import CliRunner
from PIL import Image

from jflow.cli import main
from jflow.runtime.pipeline import Pipeline
from jflow.terminal import terminal_safe

# What a terminal acts on: C0 but newline and tab, DEL, C1.
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def test_every_control_character_but_newline_and_tab_is_escaped():
    controls = "".join(map(chr, [*range(0x20), 0x7f, *range(0x80, 0xa0)]))
    safe = terminal_safe(controls)
    assert not RAW_CONTROL.search(safe)
    assert safe.count("\n") == 1 and safe.count("\t") == 1
    assert terminal_safe("a\rb\x7fc\x1b[2Jd\x9be") == "a\\rb\\x7fc\\x1b[2Jd\\x9be"
    text = "café ☕ 中文 😀 \\ tabs\tand\nlines ½ \u00a0 \u00ff"  # everything else is left as it is
    assert terminal_safe(text) == text


def test_escaping_pieces_as_they_arrive_equals_escaping_the_whole():
    pieces = ["a\r", "\x7f", "b\x1b", "[31m", "\x85c\n"]
    assert "".join(map(terminal_safe, pieces)) == terminal_safe("".join(pieces))


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("sampling", [[], ["--temperature", 1.0, "--seed", 2]])
def test_chat_prints_no_raw_control_characters(tiny_artifact, tmp_path, photo, sampling):
    Image.fromarray(photo).save(tmp_path / "photo.png")
    with Pipeline.load(tiny_artifact) as pipe:
        options = dict(temperature=1.0, seed=2) if sampling else {}
        pieces = list(pipe.answer_stream(photo, "what is this?", max_new_tokens=16, **options))
    assert RAW_CONTROL.search("".join(pieces))  # the tiny model's answer holds some (\x7f greedy; \r sampled)
    result = _run("chat", tiny_artifact, "--image", tmp_path / "photo.png", "what is this?", "--max-new-tokens", 16,
                  *sampling)
    assert result.exit_code == 0, result.output
    assert not RAW_CONTROL.search(result.stdout), repr(result.stdout)
    assert result.stdout == "".join(terminal_safe(p) for p in pieces) + "\n"


def test_reference_chat_prints_no_raw_control_characters(tmp_path, tiny_ref, photo):
    Image.fromarray(photo).save(tmp_path / "photo.png")
    answer = tiny_ref.answer(photo, "what is this?", max_new_tokens=16)
    assert RAW_CONTROL.search(answer)
    result = _run("reference", "chat", "tiny", "--image", tmp_path / "photo.png", "what is this?",
                  "--max-new-tokens", 16)
    assert result.exit_code == 0, result.output
    assert not RAW_CONTROL.search(result.stdout), repr(result.stdout)
    assert result.stdout == terminal_safe(answer) + "\n"

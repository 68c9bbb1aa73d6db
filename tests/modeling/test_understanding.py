"""Reference understanding: embeddings, greedy decoding against transformers' generate, batching, EOS."""

import copy

import numpy as np
import pytest
import torch

from jflow.errors import InputError
from jflow.modeling.understanding import answer_tokens, understanding_embeddings
from jflow.runtime.batching import understanding_batch
from jflow.runtime.image_io import preprocess_images

QUESTION = "what is in this picture?"


def _prefill_inputs(ref, photo, question=QUESTION):
    ids = torch.tensor([ref.tokenizer.understanding_ids(question)])
    pixels = torch.from_numpy(preprocess_images([photo], ref.processor))
    return ids, pixels, understanding_embeddings(ref, pixels, ids)


def test_image_embeddings_are_placed_per_spec(tiny_ref, photo):
    ids, pixels, embeds = _prefill_inputs(tiny_ref, photo)
    tok, model = tiny_ref.tokenizer, tiny_ref.model
    start = int((ids[0] == tok.image_start_id).nonzero())
    with torch.no_grad():
        image = model.encode_images(pixels)[0]
        plain = model.embed_tokens(ids)[0]
    assert torch.equal(embeds[0, start], model.beg_of_und_embed[0])  # start tag -> beg_of_und_embed
    assert torch.equal(embeds[0, start + 1:start + 577], image)       # 576 placeholders -> image
    assert torch.equal(embeds[0, start + 577], plain[start + 577])     # the end tag keeps its embedding
    assert torch.equal(embeds[0, :start], plain[:start])


def test_greedy_matches_transformers_generate(tiny_ref, photo):
    ours = answer_tokens(tiny_ref, photo, QUESTION, max_new_tokens=12)[0]
    _, _, embeds = _prefill_inputs(tiny_ref, photo)
    with torch.no_grad():
        theirs = tiny_ref.model.language_model.generate(
            inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
            max_new_tokens=12, do_sample=False, eos_token_id=tiny_ref.tokenizer.eos_id,
            pad_token_id=tiny_ref.tokenizer.eos_id)
    assert ours == theirs[0, -len(ours):].tolist() and len(theirs[0]) == len(ours)


def test_batch_equals_single_calls(tiny_ref, photo):
    images = [photo, photo[:120, :90]]
    questions = [QUESTION, "how many objects are there in the image shown here?"]
    batch = answer_tokens(tiny_ref, images, questions, max_new_tokens=8)
    for image, question, row in zip(images, questions, batch):
        assert answer_tokens(tiny_ref, image, question, max_new_tokens=8)[0] == row


def test_sampling_is_seeded(tiny_ref, photo):
    a = answer_tokens(tiny_ref, photo, QUESTION, max_new_tokens=8, temperature=1.0, top_p=0.9, seed=4)
    b = answer_tokens(tiny_ref, photo, QUESTION, max_new_tokens=8, temperature=1.0, top_p=0.9, seed=4)
    assert a == b and len(a[0]) == 8


class _AlwaysEos(torch.nn.Module):
    def __init__(self, vocab, eos):
        super().__init__()
        self.vocab, self.eos = vocab, eos

    def forward(self, hidden):
        logits = torch.zeros(*hidden.shape[:-1], self.vocab)
        logits[..., self.eos] = 1.0
        return logits


def test_decoding_stops_at_eos(tiny_ref, photo):
    ref = copy.copy(tiny_ref)
    ref.model = copy.deepcopy(tiny_ref.model)
    ref.model.language_model.lm_head = _AlwaysEos(ref.model.config.language["vocab_size"], ref.tokenizer.eos_id)
    assert answer_tokens(ref, photo, QUESTION, max_new_tokens=20) == [[ref.tokenizer.eos_id]]
    assert ref.answer(photo, QUESTION) == ""  # EOS is a special token, skipped in the text


def test_answer_text_is_decoded_tokens(tiny_ref, photo):
    tokens = answer_tokens(tiny_ref, photo, QUESTION, max_new_tokens=6)[0]
    assert tiny_ref.answer(photo, QUESTION, max_new_tokens=6) == tiny_ref.tokenizer.decode(tokens)
    assert len(tokens) == 6


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(max_new_tokens=0), InputError, "max_new_tokens"),
    (dict(temperature=-0.5), InputError, "temperature"),
    (dict(top_p=0.0), InputError, "top_p"),
    (dict(temperature="hot"), InputError, "temperature"),
])
def test_bad_answer_arguments(tiny_ref, photo, kwargs, error, message):
    with pytest.raises(error, match=message):
        tiny_ref.answer(photo, QUESTION, **kwargs)


@pytest.mark.parametrize("image, question, message", [
    ("photo", None, "questions must be a str or a list of str, got NoneType"),
    ("photo", b"what?", "got bytes"),
    (None, QUESTION, "image must be a file path, PIL image or HxWxC array, got NoneType"),
])
def test_arguments_of_the_wrong_type(tiny_ref, photo, image, question, message):
    with pytest.raises(InputError, match=message):
        tiny_ref.answer(photo if image == "photo" else image, question, max_new_tokens=2)


def test_image_count_must_match(tiny_ref, photo):
    with pytest.raises(InputError, match="2 image\\(s\\) for 1 question"):
        tiny_ref.answer([photo, photo], [QUESTION])


def test_left_padding_rows_have_no_nan(tiny_ref, photo):
    batch = understanding_batch([[1, 2, 3], [1, 2, 3, 4, 5, 6]], tiny_ref.tokenizer.pad_id)
    embeds = tiny_ref.model.embed_tokens(torch.from_numpy(batch.ids))
    with torch.no_grad():
        hidden, logits, _ = tiny_ref.model.llm_step(embeds, torch.from_numpy(batch.mask),
                                                    torch.from_numpy(batch.positions))
    assert torch.isfinite(logits).all()
    assert np.isfinite(hidden[:, -1].numpy()).all()

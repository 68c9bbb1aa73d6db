"""JanusFlow tokenizer: the checkpoint's tokenizer.json plus the official processor's token rules.

Built on the `tokenizers` library alone (no transformers) so it runs on a device.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Tokenizer

from jflow.json_file import read_config_object
from jflow.errors import ConfigError, InputError
from jflow.fields import check_fields, flag
from jflow.runtime.processor_config import ProcessorSettings
from jflow.runtime.prompts import Part, Tag, generation_parts, understanding_parts
from jflow.runtime.requests import check_text

TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
DEFAULT_BOS = "<｜begin▁of▁sentence｜>"
DEFAULT_EOS = "<｜end▁of▁sentence｜>"
PAD_TOKEN = "<｜▁pad▁｜>"


class JanusFlowTokenizer:
    def __init__(self, tokenizer: Tokenizer, settings: ProcessorSettings,
                 bos_token: str = DEFAULT_BOS, eos_token: str = DEFAULT_EOS, add_bos: bool = True):
        self.tokenizer = tokenizer
        self.settings = settings
        self.add_bos = add_bos
        self.bos_token, self.eos_token = bos_token, eos_token
        self._as_given = tokenizer.to_str()  # saved as given: the tags below are added at every load
        # The official processor adds any tag the vocabulary lacks, in this order, each taking the
        # next free id; the ids matter numerically (the end tag keeps its own embedding).
        for tag in (settings.image_tag, settings.image_gen_tag, settings.image_start_tag, settings.image_end_tag):
            if tokenizer.token_to_id(tag) is None:
                tokenizer.add_special_tokens([AddedToken(tag, special=True, normalized=False)])
        self.bos_id = self._required_id(bos_token, "bos_token")
        self.eos_id = self._required_id(eos_token, "eos_token")
        pad = tokenizer.token_to_id(PAD_TOKEN)
        self.pad_id = self.eos_id if pad is None else pad
        self.image_id = tokenizer.token_to_id(settings.image_tag)
        self.image_start_id = tokenizer.token_to_id(settings.image_start_tag)
        self.image_end_id = tokenizer.token_to_id(settings.image_end_tag)
        self.image_gen_id = tokenizer.token_to_id(settings.image_gen_tag)
        self._text_only()

    @classmethod
    def from_dir(cls, folder: str | Path, settings: ProcessorSettings | None = None) -> "JanusFlowTokenizer":
        folder = Path(folder)
        path = folder / TOKENIZER_FILE
        if not path.is_file():
            raise ConfigError(f"{path} is missing; copy tokenizer.json from the original checkpoint")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise ConfigError(f"{path} could not be read as a tokenizer ({exc})") from exc
        config = read_config_object(folder / TOKENIZER_CONFIG_FILE)
        special = read_config_object(folder / SPECIAL_TOKENS_FILE)
        check_fields(config, {"add_bos_token": flag}, folder / TOKENIZER_CONFIG_FILE)
        bos = _token_text(config, special, "bos_token", folder) or DEFAULT_BOS
        eos = _token_text(config, special, "eos_token", folder) or DEFAULT_EOS
        add_bos = config.get("add_bos_token", True)
        return cls(tokenizer, settings or ProcessorSettings.from_dir(folder), bos, eos, add_bos)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def special_ids(self) -> dict[str, int]:
        return {"bos": self.bos_id, "eos": self.eos_id, "pad": self.pad_id, "image": self.image_id,
                "image_start": self.image_start_id, "image_end": self.image_end_id,
                "image_gen": self.image_gen_id}

    def encode(self, text: str) -> list[int]:
        """Token ids with BOS first, as `tokenizer.encode` in the official code, the text taken as text:
        a control token's spelling in it is encoded as those characters, never as the control id."""
        return self.encode_parts([text])

    def encode_parts(self, parts: list[Part]) -> list[int]:
        """BOS, then each text part encoded as text and each `Tag` as its id (see jflow.runtime.prompts)."""
        ids = [self.bos_id] if self.add_bos else []
        for part in parts:
            if isinstance(part, Tag):
                ids.append(self._required_id(part.text, "tag"))
            else:
                ids += self.tokenizer.encode(part, add_special_tokens=False).ids
        return ids

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def generation_ids(self, prompt: str) -> list[int]:
        """Prompt ids for text-to-image: BOS + template; the generation tag is dropped (t_emb takes its slot)."""
        check_text(prompt, "prompt", "describe the image to generate")
        ids = self.encode_parts(generation_parts(prompt, self.settings.image_gen_tag))
        return ids[:-1]

    def understanding_ids(self, question: str) -> list[int]:
        """Prompt ids for image+question, the placeholder expanded to start tag + N image tokens + end tag.
        The question's own text never adds an image slot: an image tag spelled in it is text."""
        check_text(question, "question", "ask something about the image")
        ids = self.encode_parts(understanding_parts(question, self.settings.image_tag))
        at = ids.index(self.image_id)
        image = [self.image_start_id] + [self.image_id] * self.settings.num_image_tokens + [self.image_end_id]
        return ids[:at] + image + ids[at + 1:]

    def image_slots(self, ids, embeddings: int) -> np.ndarray:
        """Where one prompt's image goes (its start tag, then its placeholders), refused unless there is
        exactly one slot per image embedding: a mismatch would put the image in the wrong places."""
        ids = np.asarray(ids)
        slots = np.flatnonzero((ids == self.image_id) | (ids == self.image_start_id))
        if len(slots) != embeddings:
            raise InputError(f"the prompt holds {len(slots)} image slots but its image gives {embeddings} "
                             f"embeddings (the start tag + {embeddings - 1} image tokens); num_image_tokens "
                             f"({self.settings.num_image_tokens}) in processor_config.json must match the image "
                             "encoder: re-export the artifact (or the checkpoint) with its own processor settings")
        return slots

    def save(self, folder: str | Path) -> None:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json (official names)."""
        folder = Path(folder)
        (folder / TOKENIZER_FILE).write_text(self._as_given, encoding="utf-8")
        config = {"add_bos_token": self.add_bos, "add_eos_token": False, "bos_token": self.bos_token,
                  "eos_token": self.eos_token, "model_max_length": 16384, "tokenizer_class": "LlamaTokenizerFast"}
        special = {"additional_special_tokens": [self.settings.image_gen_tag], "bos_token": self.bos_token,
                   "eos_token": self.eos_token}
        for name, data in ((TOKENIZER_CONFIG_FILE, config), (SPECIAL_TOKENS_FILE, special)):
            (folder / name).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")

    def _text_only(self) -> None:
        """Make the tokenizer read text as text: every control token (BOS, EOS, pad, the image and
        generation tags) is marked special, and special tokens are not parsed from text. Only the
        template places them, by id. For text without such spellings the ids are the same as before.
        tokenizer.json may list a tag as a plain added token (parsed from text even so); marking it
        special keeps its id, and answers drop it like BOS/EOS."""
        added = self.tokenizer.get_added_tokens_decoder()
        for token_id in sorted(set(self.special_ids().values())):
            token = added.get(token_id)
            if token is None or not token.special:
                was = token or AddedToken(self.tokenizer.id_to_token(token_id), normalized=False)
                self.tokenizer.add_special_tokens([AddedToken(was.content, single_word=was.single_word,
                                                              lstrip=was.lstrip, rstrip=was.rstrip,
                                                              normalized=was.normalized, special=True)])
        self.tokenizer.encode_special_tokens = True

    def _required_id(self, token: str, name: str) -> int:
        token_id = self.tokenizer.token_to_id(token)
        if token_id is None:
            raise ConfigError(f"the tokenizer has no {name} {token!r}; check tokenizer_config.json")
        return token_id


def _token_text(config: dict, special: dict, key: str, folder: Path) -> str | None:
    """A token as tokenizer_config.json (or else special_tokens_map.json) gives it: a str or {"content": str}."""
    file = TOKENIZER_CONFIG_FILE if config.get(key) else SPECIAL_TOKENS_FILE
    value = config.get(key) or special.get(key)
    text = value.get("content") if isinstance(value, dict) else value
    if value is not None and not isinstance(text, str):
        raise ConfigError(f"{folder / file}: {key} must be a string or {{\"content\": string}}, got {value!r}")
    return text


class TextStream:
    """Turns tokens arriving one by one into text pieces, holding back a split multi-byte character.

    Byte-level BPE tokens can end in the middle of a UTF-8 character; decoding then ends in U+FFFD.
    Such a piece is held until the tokens that complete the character arrive. The pieces joined are
    exactly `decode(all ids)`.

    Work per token is bounded: only the ids not yet emitted are decoded, behind a context of the last
    LOOKBACK emitted ids (a few more if needed to start on a whole character). The context keeps the
    new tokens' leading spaces (some decoders strip the first token's), and since emitted text ends on
    a whole character, what the new ids decode to does not depend on anything before it.
    """

    LOOKBACK = 4

    def __init__(self, tokenizer: JanusFlowTokenizer):
        self.tokenizer = tokenizer
        self.window: list[int] = []  # context ids (already emitted) + pending ids
        self.context_text = ""       # what the context ids decode to on their own

    def push(self, token_id: int) -> str:
        self.window.append(int(token_id))
        text = self.tokenizer.decode(self.window)
        if text.endswith("\ufffd") or not text.startswith(self.context_text):
            return ""  # a character is still incomplete
        piece = text[len(self.context_text):]
        self._keep_context()
        return piece

    def flush(self) -> str:
        """Whatever is still held back (an incomplete character at the very end)."""
        text = self.tokenizer.decode(self.window)
        piece = text[len(self.context_text):]
        self.window, self.context_text = [], ""
        return piece

    def _keep_context(self) -> None:
        """Drop all but the last LOOKBACK ids, moving the start back (up to 4 ids, the longest UTF-8
        character) until the context decodes without a broken first character."""
        last = len(self.window) - self.LOOKBACK
        for start in range(max(last, 0), max(last - 4, 0) - 1, -1):
            text = self.tokenizer.decode(self.window[start:])
            if not text.startswith("\ufffd"):
                self.window, self.context_text = self.window[start:], text
                return
        self.context_text = self.tokenizer.decode(self.window)  # garbage bytes just before: keep them all

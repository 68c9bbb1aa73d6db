"""processor_config.json, preprocessor_config.json and tokenizer_config.json of the wrong type: one
ConfigError naming the field and the file (as for config.json), never a silent misreading."""

import json

import pytest

from jflow.errors import ConfigError
from jflow.modeling.tiny import TINY_PROCESSOR, build_tiny_tokenizer
from jflow.runtime.processor_config import PREPROCESSOR_FILE, PROCESSOR_FILE, ProcessorSettings
from jflow.runtime.tokenizer import JanusFlowTokenizer


def test_written_files_read_back(tmp_path):
    settings = ProcessorSettings(image_end_tag="<image_end>", image_mean=(0.4, 0.5, 0.6), do_normalize=False)
    (tmp_path / PROCESSOR_FILE).write_text(json.dumps(settings.to_processor_json()))
    (tmp_path / PREPROCESSOR_FILE).write_text(json.dumps({**settings.to_preprocessor_json(), "image_std": 0.25}))
    loaded = ProcessorSettings.from_dir(tmp_path)
    assert loaded.image_end_tag == "<image_end>" and loaded.image_mean == (0.4, 0.5, 0.6)
    assert loaded.image_std == (0.25, 0.25, 0.25) and loaded.do_normalize is False


def test_a_non_object_tokenizer_config_is_refused(tmp_path):
    JanusFlowTokenizer(build_tiny_tokenizer(), TINY_PROCESSOR).save(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="tokenizer_config.json must hold a JSON object"):
        JanusFlowTokenizer.from_dir(tmp_path, TINY_PROCESSOR)


@pytest.mark.parametrize("file, key, value, message", [
    (PREPROCESSOR_FILE, "do_normalize", "false", "must be true or false"),  # bool("false") was True
    (PREPROCESSOR_FILE, "image_size", "384", "must be a whole number > 0"),
    (PREPROCESSOR_FILE, "image_size", 0, "must be a whole number > 0"),
    (PREPROCESSOR_FILE, "min_size", True, "must be a whole number > 0"),
    (PREPROCESSOR_FILE, "rescale_factor", "1/255", "must be a finite number > 0"),
    (PREPROCESSOR_FILE, "image_std", [0.5, 0.0, 0.5], "must be a finite number > 0 or a list of 3 of them"),
    (PREPROCESSOR_FILE, "image_mean", [0.5, "x", 0.5], "must be a finite number or a list of 3 of them"),
    (PROCESSOR_FILE, "num_image_tokens", 576.5, "must be a whole number > 0"),
    (PROCESSOR_FILE, "image_tag", 7, "must be a non-empty string"),
    (PROCESSOR_FILE, "image_end_tag", "", "must be a non-empty string"),
])
def test_wrong_types_name_field_and_file(tmp_path, file, key, value, message):
    data = ProcessorSettings().to_processor_json() if file == PROCESSOR_FILE else \
        ProcessorSettings().to_preprocessor_json()
    data[key] = value
    (tmp_path / file).write_text(json.dumps(data))
    with pytest.raises(ConfigError) as err:
        ProcessorSettings.from_dir(tmp_path)
    text = str(err.value)
    assert text.startswith(f"{tmp_path / file}: {key} {message}") and repr(value) in text, text


def test_tokenizer_config_add_bos_token_must_be_a_bool(tmp_path):
    tok = JanusFlowTokenizer(build_tiny_tokenizer(), TINY_PROCESSOR)
    tok.save(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config["add_bos_token"] = "false"  # bool("false") was True: BOS silently added
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="tokenizer_config.json: add_bos_token must be true or false, got 'false'"):
        JanusFlowTokenizer.from_dir(tmp_path, TINY_PROCESSOR)
    config["add_bos_token"], config["bos_token"] = True, 5
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match="bos_token must be a string"):
        JanusFlowTokenizer.from_dir(tmp_path, TINY_PROCESSOR)

"""What runs report about themselves: the backbones they imported, their checkpoints' size on disk, and the example
scripts' default `save_total_limit` (the user's flag wins)."""

import json
import logging

import pytest
from helpers import tiny_config
from transformers import BertConfig, BertModel, TrainerState, TrainingArguments

from commercemm_hf import CommerceMMModel
from commercemm_hf.training.checkpoints import DEFAULT_SAVE_TOTAL_LIMIT, CheckpointSizeCallback, finished_run
from commercemm_hf.training.finetuning import ModelArguments, parse_arguments


def test_backbone_import_is_logged_with_what_was_loaded(tmp_path, caplog):
    backbone = BertModel(BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, max_position_embeddings=40))
    backbone.save_pretrained(tmp_path / "bert")
    from commercemm_hf.modeling.convert_backbones_commercemm import text_state_dict_from_backbone

    weights = text_state_dict_from_backbone(backbone.state_dict(), "bert")
    parameters = sum(tensor.numel() for tensor in weights.values())
    with caplog.at_level(logging.WARNING):
        CommerceMMModel.from_text_vision_pretrained(text=str(tmp_path / "bert"), config=tiny_config())
    (message,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Imported pretrained backbones")]
    assert (f"text tower <- {tmp_path / 'bert'} (bert, 2 layers, hidden 32): {len(weights)} tensors, "
            f"{parameters / 1e6:.1f} M parameters") in message
    assert "multimodal encoder and the other projections start untrained" in message


def test_checkpoint_size_callback_states_model_and_optimizer_sizes(tmp_path, caplog):
    checkpoint = tmp_path / "checkpoint-7"
    checkpoint.mkdir()
    (checkpoint / "model.safetensors").write_bytes(b"\0" * 3_000_000)
    (checkpoint / "optimizer.pt").write_bytes(b"\0" * 6_000_000)
    args = TrainingArguments(str(tmp_path), save_total_limit=None, report_to=[])
    state = TrainerState(global_step=7)
    callback = CheckpointSizeCallback()
    with caplog.at_level(logging.INFO):
        callback.on_save(args, state, None)
        callback.on_save(args, state, None)
    first, second = [r for r in caplog.records if r.getMessage().startswith("Saved checkpoint-7")]
    assert first.levelno == logging.WARNING and second.levelno == logging.INFO  # said loudly once
    assert "9.0 MB (model weights and trainer state 3.0 MB, optimizer state 6.0 MB)" in first.getMessage()
    assert "keeping every checkpoint" in first.getMessage()


@pytest.mark.parametrize("state, arguments, finished", [
    ({"global_step": 4, "max_steps": 4, "num_train_epochs": 1}, {"max_steps": 4}, True),
    ({"global_step": 4, "max_steps": 4, "num_train_epochs": 1}, {"max_steps": 6}, False),   # asked for more steps
    ({"global_step": 2, "max_steps": 4, "num_train_epochs": 1}, {"max_steps": 4}, False),   # stopped half-way
    ({"global_step": 12, "max_steps": 12, "num_train_epochs": 2}, {"num_train_epochs": 2}, True),
    ({"global_step": 12, "max_steps": 12, "num_train_epochs": 2}, {"num_train_epochs": 3}, False),
])
def test_finished_run_tells_a_finished_checkpoint_from_one_to_resume(tmp_path, state, arguments, finished):
    checkpoint = tmp_path / "checkpoint-x"
    checkpoint.mkdir()
    (checkpoint / "trainer_state.json").write_text(json.dumps(state))
    args = TrainingArguments(str(tmp_path), report_to=[], **arguments)
    assert (finished_run(str(checkpoint), args) is not None) == finished
    assert finished_run(None, args) is None and finished_run(str(tmp_path / "none"), args) is None


@pytest.mark.parametrize("given, expected", [
    ([], DEFAULT_SAVE_TOTAL_LIMIT),
    (["--save_total_limit", "5"], 5),
    (["--save_total_limit=1"], 1),
])
def test_example_scripts_limit_checkpoints_unless_told(tmp_path, given, expected):
    _, training_args = parse_arguments((ModelArguments, TrainingArguments), ["--output_dir", str(tmp_path), *given])
    assert training_args.save_total_limit == expected


def test_json_arguments_keep_their_save_total_limit(tmp_path):
    for values, expected in (({}, DEFAULT_SAVE_TOTAL_LIMIT), ({"save_total_limit": 4}, 4)):
        path = tmp_path / "args.json"
        path.write_text(json.dumps({"output_dir": str(tmp_path), **values}))
        _, training_args = parse_arguments((ModelArguments, TrainingArguments), [str(path)])
        assert training_args.save_total_limit == expected

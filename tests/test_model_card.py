"""The rendered model card tells the truth about how to install and what was saved."""

import json

from helpers import tiny_config

from commercemm_hf import CommerceMMConfig, CommerceMMForProductCategorization, CommerceMMModel
from commercemm_hf.hub import save_hub_folder
from commercemm_hf.model_card import render_model_card


REPO = "my-org/commercemm-tiny"


def test_card_install_line_is_true(tmp_path, processor, tokenizer):
    folder = save_hub_folder(CommerceMMModel(tiny_config(vocab_size=len(tokenizer))), processor, tmp_path / "base")
    text = render_model_card(folder, REPO).text
    assert "pip install commercemm-hf" not in text  # the package is not on PyPI
    assert "No install needed" in text and "trust_remote_code=True" in text
    assert "not on PyPI" in text and "pip install path/to/commercemm-hf" in text


def test_head_fine_tuned_from_a_base_folder_is_not_tagged_zero_shot(tmp_path, processor, tokenizer):
    """A head fine-tuned from a CommerceMMModel folder inherits its config's auto_map (zero-shot entry included), as
    examples/run_categorization.py --model_name_or_path does; its card's task tag must still be the head's."""
    base = save_hub_folder(CommerceMMModel(tiny_config(vocab_size=len(tokenizer))), processor, tmp_path / "base")
    config = CommerceMMConfig.from_pretrained(base, id2label={0: "mug", 1: "lamp"}, label2id={"mug": 0, "lamp": 1})
    head = save_hub_folder(CommerceMMForProductCategorization(config), processor, tmp_path / "head")
    saved = json.loads((head / "config.json").read_text())
    assert saved["architectures"] == ["CommerceMMForProductCategorization"]
    assert "AutoModelForZeroShotImageClassification" in saved["auto_map"]  # inherited from the base folder
    card = render_model_card(head, REPO)
    assert card.data.pipeline_tag is None
    assert "zero-shot-image-classification" not in card.text
    assert "a categorization head with 2 labels (mug, lamp)" in card.text
    base_card = render_model_card(base, REPO)  # the base model does serve transformers' zero-shot pipeline
    assert base_card.data.pipeline_tag == "feature-extraction"
    assert "zero-shot-image-classification" in base_card.data.tags


def test_embedder_metadata_tags_sentence_transformers_and_base_model(tmp_path, processor, tokenizer):
    config = tiny_config(vocab_size=len(tokenizer),
                         imported_backbones={"text": "sentence-transformers/all-MiniLM-L6-v2", "vision": "local:vit"})
    folder = save_hub_folder(CommerceMMModel(config), processor, tmp_path / "base")
    card = render_model_card(folder, REPO)
    assert card.data.pipeline_tag == "feature-extraction" and card.data.library_name == "transformers"
    for tag in ("zero-shot-image-classification", "sentence-transformers", "sentence-similarity", "commercemm"):
        assert tag in card.data.tags, tag
    assert len(card.data.tags) == len(set(card.data.tags))
    assert card.data.base_model == "sentence-transformers/all-MiniLM-L6-v2"  # the local image backbone is not one
    assert "base_model: sentence-transformers/all-MiniLM-L6-v2" in str(card)
    # without the sentence-transformers files, no sentence-transformers tags; from scratch, no base_model
    (folder / "modules.json").unlink()
    config_values = json.loads((folder / "config.json").read_text())
    config_values.pop("imported_backbones")
    (folder / "config.json").write_text(json.dumps(config_values))
    card = render_model_card(folder, REPO)
    assert "sentence-transformers" not in card.data.tags and "sentence-similarity" not in card.data.tags
    assert card.data.pipeline_tag == "feature-extraction" and card.data.base_model is None

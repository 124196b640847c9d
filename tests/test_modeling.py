import math

import pytest
import torch
from helpers import tiny_config
from transformers import AutoConfig, AutoModel

from commercemm_hf import CommerceMMConfig, CommerceMMModel
from commercemm_hf.modeling.configuration_commercemm import OMNI_TASKS, PRETRAINING_TASKS


torch.manual_seed(0)


def text_batch(batch=3, length=12, vocab=300):
    input_ids = torch.randint(5, vocab, (batch, length))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = 0
    input_ids[1, 7:] = 0
    return input_ids, attention_mask


# ---------------------------------------------------------------------------------------------------------- config


def test_presets_build_and_round_trip(tmp_path):
    for name, layers in (("tiny", (4, 4, 2)), ("small", (6, 12, 4)), ("base", (12, 12, 6))):
        config = CommerceMMConfig.from_preset(name)
        stacks = (config.text_config, config.vision_config, config.multimodal_config)
        assert tuple(s.num_hidden_layers for s in stacks) == layers
        config.save_pretrained(tmp_path / name)
        reloaded = AutoConfig.from_pretrained(tmp_path / name)
        assert type(reloaded) is CommerceMMConfig
        assert reloaded.to_diff_dict() == config.to_diff_dict()
    base = CommerceMMConfig.from_preset("base")
    assert base.vision_config.patch_size == 16 and base.vision_config.hidden_size == 768
    assert base.text_config.vocab_size == 250002 and base.text_config.position_embedding_type == "padding_offset"
    assert set(base.loss_weights) == set(PRETRAINING_TASKS) and len(PRETRAINING_TASKS) == 14
    assert base.omni_pairs == list(OMNI_TASKS) and len(OMNI_TASKS) == 9


def test_preset_overrides_merge_sub_configs():
    config = CommerceMMConfig.from_preset("tiny", text_config={"vocab_size": 1234}, projection_dim=64)
    assert config.text_config.vocab_size == 1234
    assert config.text_config.hidden_size == 128  # the rest of the preset's text config stays
    assert config.projection_dim == 64
    with pytest.raises(ValueError, match="Unknown CommerceMM preset"):
        CommerceMMConfig.from_preset("huge")


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(text_config=dict(hidden_size=100, num_attention_heads=3)), "not divisible by num_attention_heads"),
        (dict(multimodal_config=dict(hidden_size=30, num_attention_heads=4)), "not divisible"),
        (dict(vision_config=dict(image_size=30, patch_size=8)), "multiple of patch_size"),
        (dict(text_depth_choices=[3]), "text_depth_choices"),
        (dict(image_depth_choices=[0]), "image_depth_choices"),
        (dict(multimodal_depth=5), "multimodal_depth=5"),
        (dict(mim_mask_ratio=1.5), "mim_mask_ratio"),
        (dict(mlm_probability=0.0), "mlm_probability"),
        (dict(loss_weights={"mlm": 1.0, "bogus": 1.0}), "unknown tasks"),
        (dict(loss_weights={"mlm": -1.0}), "must be >= 0"),
        (dict(omni_pairs=["omni_text_to_audio"]), "unknown entries"),
        (dict(mim_fr_target="pixels"), "mim_fr_target"),
        (dict(projection_dim=0), "projection_dim"),
        (dict(text_config=dict(position_embedding_type="rotary")), "position_embedding_type"),
    ],
)
def test_invalid_configs_raise_naming_the_problem(overrides, message):
    with pytest.raises(Exception, match=message):
        tiny_config(**overrides)


def test_default_depth_choices_are_full_depth():
    config = CommerceMMConfig(
        text_config=dict(num_hidden_layers=3),
        vision_config=dict(num_hidden_layers=5),
        multimodal_config=dict(num_hidden_layers=2),
    )
    assert (config.text_depth_choices, config.image_depth_choices, config.multimodal_depth_choices) == ([3], [5], [2])


# ----------------------------------------------------------------------------------------------------------- model

@pytest.mark.parametrize("initializer_range, tells_texts_apart", [(None, True), (0.02, False)])
def test_tiny_preset_embeddings_tell_inputs_apart_at_initialisation(initializer_range, tells_texts_apart):
    # The demo's from-scratch pretraining only learns if distinct texts start with distinct embeddings: with BERT's
    # 0.02 at width 128 the post-LN text [CLS] is one vector for every text (mean cosine 0.9998), and the contrastive
    # losses collapse the image side onto it (that case is kept, so the test shows what it guards against).
    overrides = {} if initializer_range is None else {"initializer_range": initializer_range}
    config = CommerceMMConfig.from_preset("tiny", text_config={"vocab_size": 300}, **overrides)
    torch.manual_seed(0)
    model = CommerceMMModel(config).eval()
    input_ids = torch.randint(5, 300, (8, 24))
    input_ids[:, 0] = 2  # the same [CLS] token first, as a tokenizer gives
    with torch.no_grad():
        # one colour per image (normalised pixel values), so images differ as products do, not as noise does
        out = model(input_ids=input_ids, pixel_values=torch.rand(8, 3, 1, 1).expand(8, 3, 64, 64) * 4 - 2)

    def mean_cosine(embeds):
        similarity = embeds @ embeds.t()
        return float((similarity.sum() - similarity.diagonal().sum()) / (len(embeds) ** 2 - len(embeds)))

    assert (mean_cosine(out.text_embeds) < 0.99) == tells_texts_apart, mean_cosine(out.text_embeds)
    if tells_texts_apart:
        assert mean_cosine(out.image_embeds) < 0.99 and mean_cosine(out.multimodal_embeds) < 0.99



def test_forward_image_only_text_only_and_both(model):
    input_ids, attention_mask = text_batch()
    pixel_values = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        text_only = model(input_ids=input_ids, attention_mask=attention_mask)
        image_only = model(pixel_values=pixel_values)
        unpaired = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        paired = model(input_ids=input_ids[:2], attention_mask=attention_mask[:2], pixel_values=pixel_values)
    assert (text_only.text_embeds.shape == (3, 16) and text_only.image_embeds is None
            and text_only.logits_per_image is None)
    assert image_only.image_embeds.shape == (2, 16) and image_only.text_embeds is None
    assert unpaired.logits_per_image.shape == (2, 3) and unpaired.logits_per_text.shape == (3, 2)
    assert unpaired.multimodal_embeds is None  # unpaired batches are not fused
    assert paired.multimodal_embeds.shape == (2, 16)
    torch.testing.assert_close(paired.multimodal_embeds.norm(dim=-1), torch.ones(2))
    # per-token hidden states of each stack: text tokens, 1 + 16 patches, 1 + 17 + 12 fused tokens
    assert paired.text_model_output.last_hidden_state.shape == (2, 12, 32)
    assert paired.vision_model_output.last_hidden_state.shape == (2, 17, 32)
    assert paired.multimodal_model_output.last_hidden_state.shape == (2, 1 + 17 + 12, 32)
    scale = model.logit_scale.exp()
    torch.testing.assert_close(unpaired.logits_per_image, scale * unpaired.image_embeds @ unpaired.text_embeds.t())


def test_forward_input_errors(model):
    input_ids, attention_mask = text_batch()
    with pytest.raises(ValueError, match="needs pixel_values, input_ids, or both"):
        model()
    with pytest.raises(ValueError, match="needs image-text pairs"):
        model(input_ids=input_ids, pixel_values=torch.randn(2, 3, 32, 32), compute_multimodal=True)
    with pytest.raises(ValueError, match="does not match the model's 32x32"):
        model(pixel_values=torch.randn(1, 3, 48, 48))
    with pytest.raises(ValueError, match=r"pixel_values must be \(batch, 3"):
        model(pixel_values=torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="outside the text vocabulary"):
        model(input_ids=torch.tensor([[1, 300]]))
    with pytest.raises(ValueError, match="longer than the model's 40 positions"):
        model(input_ids=torch.ones(1, 41, dtype=torch.long))
    with pytest.raises(ValueError, match="does not match input_ids"):
        model(input_ids=input_ids, attention_mask=attention_mask[:, :5])
    with pytest.raises(ValueError, match="active depth must be an integer in 1..2"):
        model(input_ids=input_ids, text_depth=3)


def test_features_follow_clip_convention(model):
    input_ids, attention_mask = text_batch()
    pixel_values = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        text = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        image = model.get_image_features(pixel_values=pixel_values)
        fused = model.get_multimodal_features(input_ids=input_ids, attention_mask=attention_mask,
                                              pixel_values=pixel_values)
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
    pairs = ((text, outputs.text_embeds), (image, outputs.image_embeds), (fused, outputs.multimodal_embeds))
    for features, embeds in pairs:
        assert features.pooler_output.shape == (3, 16)
        torch.testing.assert_close(torch.nn.functional.normalize(features.pooler_output, dim=-1), embeds)


def test_padding_does_not_change_embeddings(model):
    ids = torch.randint(5, 300, (1, 6))
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 4)], dim=1).long()
    pixel_values = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        short = model(input_ids=ids, pixel_values=pixel_values)
        long = model(input_ids=padded, attention_mask=mask, pixel_values=pixel_values)
    torch.testing.assert_close(short.text_embeds, long.text_embeds, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(short.multimodal_embeds, long.multimodal_embeds, atol=1e-5, rtol=1e-4)


def test_active_depths_run_the_first_layers(model):
    input_ids, attention_mask = text_batch()
    pixel_values = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        full = model.encode_text(input_ids, attention_mask, output_hidden_states=True)
        shallow = model.encode_text(input_ids, attention_mask, text_depth=1)
        full_image = model.encode_image(pixel_values, output_hidden_states=True)
        shallow_image = model.encode_image(pixel_values, image_depth=1)
        shallow_fused = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values,
                              text_depth=1, image_depth=1, multimodal_depth=1)
    torch.testing.assert_close(shallow.last_hidden_state, full.hidden_states[1])
    assert len(full.hidden_states) == 3
    post_norm = model.vision_model.post_layernorm
    torch.testing.assert_close(shallow_image.last_hidden_state, post_norm(full_image.hidden_states[1]))
    assert shallow_fused.multimodal_embeds.shape == (3, 16)
    # the config's default depths apply when a call names none
    model.config.text_depth = 1
    try:
        with torch.no_grad():
            default = model.encode_text(input_ids, attention_mask)
        torch.testing.assert_close(default.last_hidden_state, shallow.last_hidden_state)
    finally:
        model.config.text_depth = None


def test_sdpa_and_eager_agree():
    config = tiny_config()
    sdpa = CommerceMMModel(config).eval()
    eager = CommerceMMModel(tiny_config()).eval()
    eager.load_state_dict(sdpa.state_dict())
    eager.set_attn_implementation("eager")
    assert sdpa.config._attn_implementation == "sdpa"
    assert eager.text_model.encoder.layers[0].self_attn.config._attn_implementation == "eager"
    input_ids, attention_mask = text_batch()
    pixel_values = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        a = sdpa(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        b = eager(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, output_attentions=True)
    torch.testing.assert_close(a.multimodal_embeds, b.multimodal_embeds, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.logits_per_image, b.logits_per_image, atol=1e-4, rtol=1e-4)
    attentions = b.text_model_output.attentions
    assert len(attentions) == 2 and attentions[0].shape == (3, 2, 12, 12)
    assert float(attentions[0][1, :, :, 7:].abs().max()) == 0.0  # padding gets no attention


def test_gradient_checkpointing_gives_the_same_gradients():
    config = tiny_config()
    plain = CommerceMMModel(config).train()
    checkpointed = CommerceMMModel(tiny_config()).train()
    checkpointed.load_state_dict(plain.state_dict())
    checkpointed.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    input_ids, attention_mask = text_batch()
    pixel_values = torch.randn(3, 3, 32, 32)
    for m in (plain, checkpointed):
        out = m(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        (out.logits_per_image.sum() + out.multimodal_embeds.sum()).backward()
    for (name, p1), (_, p2) in zip(plain.named_parameters(), checkpointed.named_parameters()):
        torch.testing.assert_close(p1.grad, p2.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_logit_scale_is_clamped():
    model = CommerceMMModel(tiny_config()).eval()
    assert math.isclose(float(model.logit_scale), math.log(1 / 0.07), rel_tol=1e-6)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
        out = model(input_ids=torch.tensor([[2, 9, 3]]), pixel_values=torch.randn(1, 3, 32, 32))
    assert float(out.logits_per_image.abs().max()) <= 100.0 + 1e-3


def test_interpolated_positions_for_larger_images(model):
    with torch.no_grad():
        out = model.get_image_features(pixel_values=torch.randn(1, 3, 48, 48), interpolate_pos_encoding=True)
    assert out.last_hidden_state.shape == (1, 1 + 36, 32)


def test_save_and_load_safetensors_only(tmp_path, model):
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and not any(name.endswith((".bin", ".pt", ".pth")) for name in files)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(reloaded) is CommerceMMModel
    input_ids, attention_mask = text_batch()
    pixel_values = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        a = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
        b = reloaded(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
    torch.testing.assert_close(a.multimodal_embeds, b.multimodal_embeds)
    torch.testing.assert_close(a.logits_per_text, b.logits_per_text)


def test_bfloat16_loading(tmp_path, model):
    model.save_pretrained(tmp_path)
    reloaded = CommerceMMModel.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert reloaded.text_projection.weight.dtype == torch.bfloat16
    input_ids, attention_mask = text_batch()
    with torch.no_grad():
        out = reloaded(input_ids=input_ids, attention_mask=attention_mask, pixel_values=torch.randn(3, 3, 32, 32))
        reference = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=torch.randn(3, 3, 32, 32))
    assert out.multimodal_embeds.dtype == torch.bfloat16
    torch.testing.assert_close(out.text_embeds.float(), reference.text_embeds, atol=0.05, rtol=0.05)


def test_truncated_checkpoint_gives_a_clear_error(tmp_path, model):
    model.save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(OSError, match="safetensors weights of .* are corrupt or truncated"):
        CommerceMMModel.from_pretrained(tmp_path)


def test_mismatched_checkpoint_gives_a_clear_error(tmp_path, model):
    model.save_pretrained(tmp_path)
    wider = tiny_config(projection_dim=24)
    with pytest.raises(Exception, match=r"(?i)size mismatch|shape|mismatch"):
        CommerceMMModel.from_pretrained(tmp_path, config=wider)


def test_pickle_checkpoint_is_refused(tmp_path, model):
    model.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    # never unpickled, even though a loadable pytorch_model.bin sits in the folder
    with pytest.raises(OSError, match="no file named model.safetensors"):
        CommerceMMModel.from_pretrained(tmp_path)
    with pytest.raises(OSError, match="no file named model.safetensors"):
        AutoModel.from_pretrained(tmp_path)
    with pytest.raises(ValueError, match="safetensors weights only"):
        CommerceMMModel.from_pretrained(tmp_path, use_safetensors=False)


# ------------------------------------------------------------------------------------------ get_item_features


def test_item_features_embed_whatever_each_item_has(model):
    """One door: a text-only, an image-only and a text+image item of one batch each get the embedding the three
    feature functions give them, at the depths asked; the kinds a row lacks are NaN."""
    input_ids, attention_mask = text_batch()
    pixel_values = torch.randn(3, 3, 32, 32)
    has_text, has_image = torch.tensor([True, False, True]), torch.tensor([False, True, True])
    depths = dict(text_depth=1, image_depth=1, multimodal_depth=1)
    with torch.no_grad():
        out = model.get_item_features(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                                      has_text=has_text, has_image=has_image, **depths)
        text = model.get_text_features(input_ids=input_ids[:1], attention_mask=attention_mask[:1], text_depth=1)
        image = model.get_image_features(pixel_values=pixel_values[1:2], image_depth=1)
        both = model.get_multimodal_features(input_ids=input_ids[2:], pixel_values=pixel_values[2:],
                                             attention_mask=attention_mask[2:], **depths)
    expected = torch.cat([text.pooler_output, image.pooler_output, both.pooler_output])
    torch.testing.assert_close(out.pooler_output, expected, atol=1e-5, rtol=0)
    assert out.text_embeds[1].isnan().all() and out.image_embeds[0].isnan().all()
    assert out.multimodal_embeds[:2].isnan().all() and not out.multimodal_embeds[2].isnan().any()
    with torch.no_grad():  # the whole batch with both modalities: the multimodal embedding, the same numbers
        whole = model.get_item_features(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
        fused = model.get_multimodal_features(input_ids=input_ids, pixel_values=pixel_values,
                                              attention_mask=attention_mask)
        asked = model.get_item_features(input_ids=input_ids, pixel_values=pixel_values, kind="image", normalize=True)
    assert torch.equal(whole.pooler_output, fused.pooler_output) and whole.text_embeds is None
    torch.testing.assert_close(asked.pooler_output.norm(dim=-1), torch.ones(3))


def test_item_features_name_what_the_inputs_cannot_give(model):
    input_ids, _ = text_batch()
    with pytest.raises(ValueError, match="got neither"):
        model.get_item_features()
    with pytest.raises(ValueError, match="A multimodal embedding needs an image and a text; the inputs give text only"):
        model.get_item_features(input_ids=input_ids, kind="multimodal")
    with pytest.raises(ValueError, match="Unknown embedding kind 'fusion'"):
        model.get_item_features(input_ids=input_ids, kind="fusion")
    with pytest.raises(ValueError, match="whose tensor"):
        model.get_item_features(input_ids=input_ids, has_image=torch.tensor([True, False, False]))

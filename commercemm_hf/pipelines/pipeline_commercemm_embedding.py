"""`product-embedding`: the text, image and multimodal embeddings of products, queries or posts.

This file travels as Hugging Face remote code: transformers, torch, PIL and single-dot siblings only.
"""

import torch
from transformers import Pipeline

from .pipeline_commercemm_inputs import (
    InputWarningsMixin,
    base_model,
    embed_rows,
    encode_item,
    normalize_item,
    split_depths,
)
from .pipeline_commercemm_onnx import features_model, split_backend


class CommerceMMEmbeddingPipeline(InputWarningsMixin, Pipeline):
    """Embeds items given as a text, an image, or `{"image": ..., "text": ...}`.

    Each result holds `text_embeds`, `image_embeds` and `multimodal_embeds` (L2-normalised lists of floats, or
    `None` for a kind the item cannot give). `return_tensors=True` returns torch tensors instead. Active depths
    (`text_depth`, `image_depth`, `multimodal_depth`) pass through to the model. Empty and truncated texts are warned
    about once per call, with counts; an unreadable image is a ValueError naming its path. `backend="onnx"` (or
    `"onnx-int8"`) runs the graphs of `commercemm export` (in `<model folder>/onnx`, or `onnx_folder=`) with ONNX
    Runtime instead of torch, with the same results.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> from transformers import pipeline
        >>> from commercemm_hf import create_model_and_processor
        >>> from commercemm_hf.hub import save_hub_folder
        >>> model, processor = create_model_and_processor("tiny", texts=["red mug", "blue lamp"] * 5, vocab_size=300)
        >>> folder = save_hub_folder(model, processor, tempfile.mkdtemp())
        >>> embed = pipeline("product-embedding", model=str(folder), trust_remote_code=True)
        >>> mug = Image.new("RGB", (64, 64), "red")
        >>> results = embed([{"image": mug, "text": "red mug"}, "blue lamp"], batch_size=8)
        >>> [{kind: None if values is None else len(values) for kind, values in result.items()} for result in results]
        ... # doctest: +NORMALIZE_WHITESPACE
        [{'text_embeds': 128, 'image_embeds': 128, 'multimodal_embeds': 128},
         {'text_embeds': 128, 'image_embeds': None, 'multimodal_embeds': None}]
    """

    _load_tokenizer = True
    _load_image_processor = True
    _load_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, return_tensors=None, **kwargs):
        forward_params = {**split_depths(kwargs), **split_backend(kwargs)}
        if kwargs:
            raise ValueError(f"Unknown arguments for product-embedding: {sorted(kwargs)}.")
        postprocess_params = {} if return_tensors is None else {"return_tensors": return_tensors}
        return {}, forward_params, postprocess_params

    def preprocess(self, item):
        return encode_item(normalize_item(item), self.tokenizer, self.image_processor, base_model(self.model).config)

    def _forward(self, model_inputs, backend="torch", onnx_folder=None, **depths):
        model = features_model(self, base_model(self.model), backend, onnx_folder)
        with torch.no_grad():
            embeds = embed_rows(model, model_inputs, depths)
        return {kind: embeds[kind] for kind in ("text", "image", "multimodal")}

    def postprocess(self, model_outputs, return_tensors=False):
        result = {}
        for kind, values in model_outputs.items():
            row = values[0]
            result[f"{kind}_embeds"] = None if torch.isnan(row).any() else (row if return_tensors else row.tolist())
        return result

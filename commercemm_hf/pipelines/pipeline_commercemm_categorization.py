"""`product-categorization`: top-k labels of a fine-tuned `CommerceMMForProductCategorization` for an image, a
text, or both.

This file travels as Hugging Face remote code: transformers, torch, PIL and single-dot siblings only.
"""

import torch
from transformers import Pipeline

from .pipeline_commercemm_inputs import InputWarningsMixin, checked_top_k, encode_item, normalize_item, split_depths


class CommerceMMCategorizationPipeline(InputWarningsMixin, Pipeline):
    """Labels with scores, best first: softmax scores for single-label heads, independent sigmoid scores for
    multi-label heads (`config.problem_type == "multi_label_classification"`). A head whose config records
    `expected_modalities` (`examples/run_categorization.py` writes what it trained on) warns once per call about
    inputs lacking one of them; an unreadable image is a ValueError naming its path.

    Example:
        >>> import tempfile
        >>> from PIL import Image
        >>> from transformers import pipeline
        >>> from commercemm_hf import CommerceMMForProductCategorization, create_model_and_processor
        >>> from commercemm_hf.hub import save_hub_folder
        >>> model, processor = create_model_and_processor(
        ...     "tiny", CommerceMMForProductCategorization, texts=["red mug", "blue lamp"] * 5, vocab_size=300,
        ...     num_labels=3, id2label={0: "mug", 1: "lamp", 2: "vase"})
        >>> folder = save_hub_folder(model, processor, tempfile.mkdtemp())  # a fine-tuned head's folder, untrained here
        >>> classify = pipeline("product-categorization", model=str(folder), trust_remote_code=True)
        >>> labels = classify({"image": Image.new("RGB", (64, 64), "red"), "text": "red ceramic mug"}, top_k=2)
        >>> len(labels), sorted(labels[0]), labels[0]["score"] >= labels[1]["score"]
        (2, ['label', 'score'], True)
        >>> round(sum(label["score"] for label in classify("red mug", top_k=3)), 4)  # softmax over the 3 labels
        1.0
    """

    _load_tokenizer = True
    _load_image_processor = True
    _load_processor = False
    _load_feature_extractor = False

    def _sanitize_parameters(self, top_k=None, **kwargs):
        forward_params = split_depths(kwargs)
        if kwargs:
            raise ValueError(f"Unknown arguments for product-categorization: {sorted(kwargs)}.")
        postprocess_params = {}
        if top_k is not None:
            postprocess_params["top_k"] = checked_top_k(top_k)
        return {}, forward_params, postprocess_params

    def preprocess(self, item):
        architectures = getattr(self.model.config, "architectures", None) or []
        # a folder saved from another CommerceMM class loads with a freshly initialised classifier and default labels
        not_a_head = architectures and "CommerceMMForProductCategorization" not in architectures
        if not_a_head or not hasattr(self.model, "classifier") or not getattr(self.model.config, "id2label", None):
            raise ValueError(
                "product-categorization needs a fine-tuned CommerceMMForProductCategorization with id2label in its "
                "config (see examples/run_categorization.py); this model has no label set."
            )
        return encode_item(normalize_item(item), self.tokenizer, self.image_processor, self.model.config)

    def _forward(self, model_inputs, **depths):
        # the head's own forward (its `get_item_features` call reads `has_text` / `has_image` of the mixed batch)
        with torch.no_grad():
            logits = self.model(**model_inputs, **depths, return_dict=True).logits
        return {"logits": logits}

    def postprocess(self, model_outputs, top_k=5):
        logits = model_outputs["logits"][0].float()
        multi_label = self.model.config.problem_type == "multi_label_classification"
        scores = logits.sigmoid() if multi_label else logits.softmax(dim=-1)
        top_k = min(top_k, scores.shape[0])
        values, indices = scores.topk(top_k)
        id2label = self.model.config.id2label
        return [{"label": id2label[int(i)], "score": float(v)} for v, i in zip(values, indices)]

"""A sentence-transformers module for CommerceMM: `SentenceTransformer(folder, trust_remote_code=True).encode(...)`
gives the text embedding of a text, the image embedding of an image and the multimodal (fused) embedding of a
`{"text": ..., "image": ...}` product, each L2-normalised and equal to the matching `get_*_features(...)`.

sentence-transformers' own auto-detection loads only the text or image half of a folder and refuses
`{"text", "image"}` inputs ("supports image and text individually, but cannot combine them"); this module advertises
the combined modality and runs the multimodal encoder for it. `commercemm_hf.hub.save_hub_folder` writes the
`modules.json` / `config_sentence_transformers.json` that name it, so every saved `CommerceMMModel` folder loads.

Encode one kind per call (a batch mixing texts, images and pairs is refused by sentence-transformers itself). Images
are PIL images, paths or URLs.

This file travels as remote code, loaded by sentence-transformers (which is then installed): it imports
sentence_transformers, transformers and single-dot siblings only.

Example:
    >>> import tempfile
    >>> from PIL import Image
    >>> from sentence_transformers import SentenceTransformer
    >>> from commercemm_hf import create_model_and_processor
    >>> from commercemm_hf.hub import save_hub_folder
    >>> model, processor = create_model_and_processor("tiny", texts=["red mug", "blue lamp"] * 5, vocab_size=300)
    >>> folder = save_hub_folder(model, processor, tempfile.mkdtemp())
    >>> encoder = SentenceTransformer(str(folder), trust_remote_code=True)
    >>> image = Image.new("RGB", (64, 64), "red")
    >>> [encoder.encode(batch).shape for batch in (["red ceramic mug"], [image], [{"text": "red mug", "image": image}])]
    [(1, 128), (1, 128), (1, 128)]
"""

from sentence_transformers.base.modality import infer_modality
from sentence_transformers.base.modules import InputModule
from transformers import AutoModel, AutoProcessor

from .pipeline_commercemm_inputs import base_model, collate, embed_rows, encode_item, normalize_item


class CommerceMMSentenceEncoder(InputModule):
    """The whole CommerceMM model as one sentence-transformers input module (`sentence_embedding`: normalised text,
    image or multimodal embedding, by what each input holds)."""

    config_keys = ["text_depth", "image_depth", "multimodal_depth"]
    config_file_name = "sentence_commercemm_config.json"
    save_in_root = True

    def __init__(self, model, processor, text_depth=None, image_depth=None, multimodal_depth=None):
        super().__init__()
        self.model = base_model(model).eval()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.text_depth, self.image_depth, self.multimodal_depth = text_depth, image_depth, multimodal_depth

    @property
    def modalities(self):
        return ["text", "image", ("image", "text")]

    def get_embedding_dimension(self) -> int:
        return self.model.config.projection_dim

    get_sentence_embedding_dimension = get_embedding_dimension

    def _item(self, sample, where: str) -> dict:
        if isinstance(sample, str) and infer_modality(sample, self.modalities) == "image":
            sample = {"image": sample}
        return normalize_item(sample, where)

    def preprocess(self, inputs, prompt=None, **kwargs):
        items = [self._item(sample, f"input {index}") for index, sample in enumerate(inputs)]
        if prompt:
            items = [{**item, "text": prompt + item["text"]} if item["text"] is not None else item for item in items]
        encoded = [encode_item(item, self.tokenizer, self.processor.image_processor, self.model.config)
                   for item in items]
        return collate(encoded, self.tokenizer.pad_token_id or 0)

    def forward(self, features, **kwargs):
        depths = {name: getattr(self, name) for name in self.config_keys if getattr(self, name) is not None}
        embeds = embed_rows(self.model, features, depths)
        features["sentence_embedding"] = embeds["preferred"]
        return features

    def save(self, output_path, *args, safe_serialization=True, **kwargs):
        self.model.save_pretrained(output_path, safe_serialization=safe_serialization)
        self.processor.save_pretrained(output_path)
        self.save_config(output_path)

    @classmethod
    def load(cls, model_name_or_path, subfolder="", token=None, cache_folder=None, revision=None,
             local_files_only=False, trust_remote_code=False, model_kwargs=None, **kwargs):
        hub = {"token": token, "cache_dir": cache_folder, "revision": revision, "local_files_only": local_files_only,
               "trust_remote_code": trust_remote_code}
        if subfolder:
            hub["subfolder"] = subfolder
        config = cls.load_config(model_name_or_path, subfolder=subfolder, token=token, cache_folder=cache_folder,
                                 revision=revision, local_files_only=local_files_only)
        if "fusion_depth" in config:  # a folder saved before the multimodal stack's depth got its one name
            config["multimodal_depth"] = config.pop("fusion_depth")
        model = AutoModel.from_pretrained(model_name_or_path, **hub, **(model_kwargs or {}))
        processor = AutoProcessor.from_pretrained(model_name_or_path, **hub)
        return cls(model, processor, **config)


__all__ = ["CommerceMMSentenceEncoder"]

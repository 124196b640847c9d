"""ONNX Runtime backend of the CommerceMM pipelines: the graphs `commercemm export FOLDER --format onnx` writes, behind
the model's `get_item_features` and three `get_*_features` methods, so the pipelines' batching, input checks and
normalisation stay the same.

`pipeline("product-embedding", model=folder, trust_remote_code=True, backend="onnx")` runs on `folder/onnx/`
(`backend="onnx-int8"`: the int8 graphs; `onnx_folder=` names another export folder). The torch model still loads
(its config and processor drive the pipeline) but no torch forward runs.

This file travels as Hugging Face remote code: transformers, torch and numpy at the top; onnxruntime is imported
when an ONNX backend is asked for (transformers refuses remote code whose top-level imports are missing).
"""

import json
import os
from dataclasses import dataclass

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput


BACKENDS = ("torch", "onnx", "onnx-int8")
#: the file `commercemm export` writes beside the graphs: their input / output names and the session options
ONNX_CONFIG_NAME = "onnx_config.json"
#: ONNX Runtime graph optimisations to leave out (`commercemm export` records them in onnx_config.json for any
#: server; exports that predate that field get these): the CPU kernel of the fused Add + LayerNorm
#: (`SkipLayerNormalization`, what a post-LN BERT-style tower fuses into) is slower than the two ops it replaces;
#: measured at batch 1, 1 thread (bench/bench_latency.py, CPU time): small preset query 2.46 -> 1.98 ms int8,
#: 7.28 -> 6.98 ms fp32; tiny 0.59 -> 0.43 ms int8. Same outputs.
DISABLED_OPTIMIZERS = ("SkipLayerNormFusion",)


@dataclass
class OnnxItemOutput(ModelOutput):
    """What `CommerceMMModel.get_item_features` returns (`CommerceMMItemOutput`, which lives in the modeling folder):
    `pooler_output`, one embedding per item, and each kind's embeddings, NaN on rows lacking it."""

    pooler_output: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    multimodal_embeds: torch.FloatTensor | None = None


class OnnxEmbeddingModel:
    """The exported text / image / multimodal graphs of one folder, with the `CommerceMMModel` feature API.

    Only the depths the graphs were exported at run (`onnx_config.json` records them); asking for another depth is
    a ValueError.

    Example:
        >>> import tempfile, torch
        >>> from commercemm_hf import create_model_and_processor
        >>> from commercemm_hf.export import export_onnx
        >>> from commercemm_hf.hub import save_hub_folder
        >>> from commercemm_hf.pipelines.pipeline_commercemm_onnx import OnnxEmbeddingModel
        >>> model, processor = create_model_and_processor("tiny", texts=["red mug", "blue lamp"] * 5, vocab_size=300)
        >>> folder = save_hub_folder(model, processor, tempfile.mkdtemp())
        >>> _ = export_onnx(folder, graphs=("text",), verbose=False)
        >>> onnx_model = OnnxEmbeddingModel(folder / "onnx", config=model.config)
        >>> batch = processor(text=["red mug", "blue lamp"], return_tensors="pt", padding=True)
        >>> embeds = onnx_model.get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output
        >>> eager = model.eval().get_text_features(batch["input_ids"], batch["attention_mask"]).pooler_output
        >>> embeds.shape, bool(torch.allclose(embeds, eager, atol=1e-4))  # (batch, projection_dim), as eager
        (torch.Size([2, 128]), True)
    """

    def __init__(self, folder, config, int8: bool = False, threads: int | None = None):
        try:
            import onnxruntime
        except ImportError as error:
            raise ImportError("The ONNX backend needs onnxruntime: pip install onnxruntime") from error
        path = os.path.join(folder, ONNX_CONFIG_NAME)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path} does not exist: export the model first "
                                    "(commercemm export MODEL_FOLDER --format onnx"
                                    f"{' --quantize int8' if int8 else ''}).")
        with open(path, encoding="utf-8") as file:
            self.export_config = json.load(file)
        self.config = config
        self.folder = folder
        if self.export_config.get("projection_dim") != config.projection_dim:
            raise ValueError(f"{path} was exported from a model with projection_dim "
                             f"{self.export_config.get('projection_dim')}, not this one ({config.projection_dim}).")
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            options.intra_op_num_threads = threads
        disabled = self.export_config.get("session", {}).get("disabled_optimizers", list(DISABLED_OPTIMIZERS))
        self.sessions = {}
        for kind, entry in self.export_config["graphs"].items():
            file_name = entry.get("int8_file") if int8 else entry["file"]
            if file_name is None:
                raise FileNotFoundError(f"{path} lists no int8 graph for {kind}: export with --quantize int8.")
            self.sessions[kind] = (onnxruntime.InferenceSession(os.path.join(folder, file_name), options,
                                                                providers=["CPUExecutionProvider"],
                                                                disabled_optimizers=disabled),
                                   [item["name"] for item in entry["inputs"]])

    def _check_depths(self, depths: dict) -> None:
        exported = self.export_config.get("depths", {})
        for argument, depth in depths.items():
            stack = argument.replace("_depth", "")
            if depth is not None and depth != exported.get(stack):
                raise ValueError(f"The ONNX graphs in {self.folder} were exported at {stack} depth "
                                 f"{exported.get(stack)}; {argument}={depth} needs the torch backend or an export "
                                 "of a model truncated to that depth (model.truncate(...)).")

    def _run(self, kind: str, **inputs) -> BaseModelOutputWithPooling:
        if kind not in self.sessions:
            raise ValueError(f"{self.folder} holds no {kind} graph (exported: {sorted(self.sessions)}).")
        onnx_session, names = self.sessions[kind]
        device = next(iter(inputs.values())).device
        feed = {name: inputs[name].detach().cpu().numpy() for name in names}
        embeds = torch.from_numpy(onnx_session.run(None, feed)[0]).to(device)
        return BaseModelOutputWithPooling(pooler_output=embeds)

    def get_text_features(self, input_ids, attention_mask=None, text_depth=None, **kwargs):
        self._check_depths({"text_depth": text_depth})
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self._run("text", input_ids=input_ids, attention_mask=attention_mask)

    def get_image_features(self, pixel_values, image_depth=None, **kwargs):
        self._check_depths({"image_depth": image_depth})
        return self._run("image", pixel_values=pixel_values)

    def get_multimodal_features(self, input_ids, pixel_values, attention_mask=None, **depths):
        self._check_depths(depths)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self._run("multimodal", input_ids=input_ids, attention_mask=attention_mask,
                         pixel_values=pixel_values)


    def get_item_features(self, input_ids=None, pixel_values=None, attention_mask=None, has_text=None,
                          has_image=None, kind=None, normalize=False, **depths) -> OnnxItemOutput:
        """`CommerceMMModel.get_item_features` on the exported graphs: each graph runs on the rows of the batch that
        have what it reads (`has_text` / `has_image`, default: every row has what the tensors give)."""
        reference = input_ids if input_ids is not None else pixel_values
        size = reference.shape[0]
        given = {"text": has_text, "image": has_image}
        for name, tensor in (("text", input_ids), ("image", pixel_values)):
            given[name] = (given[name].bool() if given[name] is not None
                           else torch.full((size,), tensor is not None, dtype=torch.bool, device=reference.device))
        given["multimodal"] = given["text"] & given["image"]
        if attention_mask is None and input_ids is not None:
            attention_mask = torch.ones_like(input_ids)
        embeds = {}
        for name in (kind,) if kind is not None else ("text", "image", "multimodal"):
            rows = given[name].nonzero()[:, 0]
            values = torch.full((size, self.config.projection_dim), float("nan"), device=reference.device)
            if len(rows):
                if name != "image":
                    ids, mask = input_ids[rows], attention_mask[rows]
                    length = max(int(mask.sum(dim=1).max()), 1)  # the pipelines pad on the right
                    ids, mask = ids[:, :length], mask[:, :length]
                if name == "text":
                    features = self.get_text_features(ids, mask, **_only(depths, "text"))
                elif name == "image":
                    features = self.get_image_features(pixel_values[rows], **_only(depths, "image"))
                else:
                    features = self.get_multimodal_features(ids, pixel_values[rows], mask, **depths)
                values[rows] = features.pooler_output.to(values.dtype)
            embeds[name] = torch.nn.functional.normalize(values, dim=-1) if normalize else values
        if kind is not None:
            pooled = embeds[kind]
        else:
            pooled = torch.where(given["text"][:, None], embeds["text"], embeds["image"])
            pooled = torch.where(given["multimodal"][:, None], embeds["multimodal"], pooled)
        return OnnxItemOutput(pooler_output=pooled, **{f"{name}_embeds": value for name, value in embeds.items()})


def _only(depths: dict, stack: str) -> dict:
    return {f"{stack}_depth": depths.get(f"{stack}_depth")}


def split_backend(kwargs: dict) -> dict:
    """Pop `backend=` and `onnx_folder=` from pipeline keyword arguments (checked)."""
    options = {name: kwargs.pop(name) for name in ("backend", "onnx_folder") if name in kwargs}
    if options.get("backend", "torch") not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {options['backend']!r}.")
    return options


def features_model(pipeline, model, backend: str = "torch", onnx_folder=None):
    """`model` itself for the torch backend, else the (cached) `OnnxEmbeddingModel` of the pipeline's export folder
    (`onnx_folder`, default `<model folder>/onnx`)."""
    if backend == "torch":
        return model
    folder = onnx_folder or os.path.join(model.name_or_path, "onnx")
    key = (backend, str(folder))
    cache = pipeline.__dict__.setdefault("_onnx_models", {})
    if key not in cache:
        cache[key] = OnnxEmbeddingModel(folder, model.config, int8=backend == "onnx-int8")
    return cache[key]

"""Export a saved CommerceMM folder for serving: the text tower, the image tower and the multimodal (fused) embedding
as three ONNX graphs with dynamic batch and sequence axes, optionally int8, checked against eager on padded batches.

    commercemm export FOLDER --format onnx [--quantize int8] [--output DIR]

writes into DIR (default `FOLDER/onnx`):
- `text.onnx` (`input_ids`, `attention_mask` -> `text_embeds`), `image.onnx` (`pixel_values` -> `image_embeds`),
  `multimodal.onnx` (`input_ids`, `attention_mask`, `pixel_values` -> `multimodal_embeds`); each output is the
  projected embedding `get_*_features(...).pooler_output` (not normalised: L2-normalise for cosine search);
- with `--quantize int8`: `text_int8.onnx`, ... (ONNX Runtime dynamic quantisation: int8 weights, activations
  quantised per call), beside the fp32 graphs;
- `onnx_config.json`: the graphs' files, input / output names, dtypes and axes, the depths they were exported at,
  the ONNX Runtime optimisations to disable (`session.disabled_optimizers`: faster, same outputs);
- the processor files (`AutoProcessor.from_pretrained(DIR, trust_remote_code=True)` loads them).

The graphs go through `torch.export` (`torch.onnx.export(..., dynamo=True)`), never the legacy tracer: a trace taken
on an unpadded batch records the "nothing is padded" branch and then ignores the mask of every padded batch. Each
graph is run with ONNX Runtime on padded batches (batch 1 and 3, several lengths) and compared with eager PyTorch
at export time; the per-row minimum cosine is printed and an export below `FP32_MIN_COSINE` / `INT8_MIN_COSINE`
fails.

Example: `export_onnx`'s docstring (a tiny model's text graph, fp32 and int8, exported and checked).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.export import Dim

# the file listing the graphs and the ONNX Runtime optimisations to leave out are defined once, beside the backend
# that reads them
from .pipelines.pipeline_commercemm_onnx import DISABLED_OPTIMIZERS, ONNX_CONFIG_NAME


FP32_MIN_COSINE = 0.9999
INT8_MIN_COSINE = 0.99
QUANTIZATIONS = ("int8",)
#: graphs over this many bytes of weights keep them in an external data file (ONNX protobufs stop at 2 GiB)
EXTERNAL_DATA_BYTES = 1 << 30


class TextEmbedding(nn.Module):
    """`get_text_features(...).pooler_output` as a module with tensor inputs only (what `torch.export` takes)."""

    input_names = ("input_ids", "attention_mask")
    output_name = "text_embeds"

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        return self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


class ImageEmbedding(TextEmbedding):
    input_names = ("pixel_values",)
    output_name = "image_embeds"

    def forward(self, pixel_values):
        return self.model.get_image_features(pixel_values=pixel_values).pooler_output


class MultimodalEmbedding(TextEmbedding):
    input_names = ("input_ids", "attention_mask", "pixel_values")
    output_name = "multimodal_embeds"

    def forward(self, input_ids, attention_mask, pixel_values):
        return self.model.get_multimodal_features(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values
        ).pooler_output


GRAPHS = {"text": TextEmbedding, "image": ImageEmbedding, "multimodal": MultimodalEmbedding}
#: the symbolic axes of each input (the same names in onnx_config.json)
INPUT_AXES = {"input_ids": ("batch", "sequence"), "attention_mask": ("batch", "sequence"),
              "pixel_values": ("batch", "channels", "height", "width")}
INPUT_DTYPES = {"input_ids": "int64", "attention_mask": "int64", "pixel_values": "float32"}

#: texts of very different lengths, so that every example batch is padded
EXAMPLE_TEXTS = ["red ceramic mug", "striped cotton cushion cover, navy and white, 45 x 45 cm, with a hidden zip",
                 "lamp", "waterproof hiking backpack 30 l with padded laptop sleeve and rain cover", "blue"]


def example_inputs(processor, config, texts: list[str], seed: int = 0) -> dict[str, torch.Tensor]:
    """A right-padded batch of `texts` with random images, made by the model's own processor."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    size = config.vision_config.image_size
    images = [Image.fromarray(rng.integers(0, 256, (size + 7 * i, size + 3 * i, 3), dtype=np.uint8))
              for i in range(len(texts))]
    inputs = processor(images=images, text=texts, padding=True, truncation=True, return_tensors="pt")
    return {name: inputs[name] for name in ("input_ids", "attention_mask", "pixel_values")}


def _dynamic_shapes(input_names, max_length: int) -> dict:
    # min=2: torch.export specialises sizes 0 and 1; the ONNX graph still runs batch 1 and length 1 (checked below)
    batch, sequence = Dim("batch", min=2, max=65536), Dim("sequence", min=2, max=max(max_length, 2))
    shapes = {"input_ids": {0: batch, 1: sequence}, "attention_mask": {0: batch, 1: sequence},
              "pixel_values": {0: batch}}
    return {name: shapes[name] for name in input_names}


def export_graph(module: nn.Module, example: dict[str, torch.Tensor], path: Path, max_length: int) -> None:
    """`torch.onnx.export(..., dynamo=True)` of one embedding module, dynamic in batch and sequence."""
    names = module.input_names
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    with torch.no_grad():
        program = torch.onnx.export(
            module, (), kwargs={name: example[name] for name in names}, dynamo=True, verbose=False,
            dynamic_shapes=_dynamic_shapes(names, max_length), input_names=list(names),
            output_names=[module.output_name], external_data=weight_bytes > EXTERNAL_DATA_BYTES,
        )
    program.save(str(path), external_data=weight_bytes > EXTERNAL_DATA_BYTES)


def quantize_int8(source: Path, target: Path) -> None:
    """ONNX Runtime dynamic quantisation: int8 weights of MatMul / Gemm, activations quantised at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        # shape inference and graph clean-up first, as ONNX Runtime's quantisation guide asks
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8, per_channel=False,
                         op_types_to_quantize=["MatMul", "Gemm"])


def session(path: str | os.PathLike, threads: int | None = None):
    """An `onnxruntime.InferenceSession` on the CPU with every graph optimisation but `DISABLED_OPTIMIZERS`."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"],
                                        disabled_optimizers=list(DISABLED_OPTIMIZERS))


def check_batches(processor, config) -> list[dict[str, torch.Tensor]]:
    """The padded batches every graph is checked on: batch 1, and batches of 3 and 5 with different lengths."""
    return [example_inputs(processor, config, EXAMPLE_TEXTS[1:2], seed=1),
            example_inputs(processor, config, EXAMPLE_TEXTS[:3], seed=2),
            example_inputs(processor, config, EXAMPLE_TEXTS, seed=3)]


def compare_with_eager(module: nn.Module, path: Path, batches: list[dict[str, torch.Tensor]]) -> dict:
    """Run the graph at `path` with ONNX Runtime on `batches`; the minimum per-row cosine with eager and the largest
    absolute difference."""
    onnx_session = session(path)
    cosines, max_abs = [], 0.0
    for batch in batches:
        feed = {name: batch[name] for name in module.input_names}
        with torch.no_grad():
            expected = module(**feed).float()
        got = torch.from_numpy(onnx_session.run(None, {k: v.numpy() for k, v in feed.items()})[0]).float()
        cosines.append(torch.nn.functional.cosine_similarity(got, expected, dim=-1))
        max_abs = max(max_abs, float((got - expected).abs().max()))
    cosine = torch.cat(cosines)
    return {"min_cosine": float(cosine.min()), "max_abs_diff": max_abs, "rows": int(cosine.numel()),
            "batches": [dict(zip(("batch", "sequence"), b["input_ids"].shape)) for b in batches],
            "padded_rows": int(sum(int((b["attention_mask"] == 0).any(dim=1).sum()) for b in batches))
            if "attention_mask" in module.input_names else None}


def load_for_export(folder: str | os.PathLike):
    """The `CommerceMMModel` (the encoder of a head model) and processor of a saved folder, in eval mode."""
    from transformers import AutoModel, AutoProcessor

    from . import CommerceMMModel  # noqa: F401  (registers the Auto classes)
    from .factory import check_model_folder

    check_model_folder(str(folder))  # a broken folder named, not a TypeError from transformers
    model = AutoModel.from_pretrained(folder)
    model = getattr(model, "commercemm", model).eval().float()
    return model, AutoProcessor.from_pretrained(folder)


def export_onnx(folder: str | os.PathLike, output: str | os.PathLike | None = None, quantize: str | None = None,
                graphs: tuple[str, ...] = tuple(GRAPHS), verbose: bool = True) -> dict:
    """Export `folder`'s text, image and multimodal embeddings to ONNX in `output` (default `folder/onnx`), check
    them against eager on padded batches and return the report written into `onnx_config.json`.

    Example:
        >>> import tempfile
        >>> from commercemm_hf import create_model_and_processor
        >>> from commercemm_hf.export import export_onnx
        >>> from commercemm_hf.hub import save_hub_folder
        >>> model, processor = create_model_and_processor("tiny", texts=["red mug", "blue lamp"] * 5, vocab_size=300)
        >>> folder = save_hub_folder(model, processor, tempfile.mkdtemp())
        >>> report = export_onnx(folder, quantize="int8", graphs=("text",))  # all three graphs by default
        ... # doctest: +ELLIPSIS
        text             text.onnx ... MB  min cosine vs eager ... (>= 0.9999), max |diff| ... on 9 rows (5 padded)
        text_int8        text_int8.onnx ... MB  min cosine vs eager 0.99... (>= 0.99), max |diff| ... (5 padded)
        >>> sorted(report["checks"]), report["checks"]["text_int8"]["passed"], report["projection_dim"]
        (['text', 'text_int8'], True, 128)
        >>> sorted(path.name for path in (folder / "onnx").glob("*.onnx"))
        ['text.onnx', 'text_int8.onnx']
    """
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {QUANTIZATIONS} or None, got {quantize!r}.")
    unknown = sorted(set(graphs) - set(GRAPHS))
    if unknown:
        raise ValueError(f"unknown graphs {unknown}: choose from {list(GRAPHS)}.")
    folder = Path(folder)
    output = Path(output) if output is not None else folder / "onnx"
    output.mkdir(parents=True, exist_ok=True)
    model, processor = load_for_export(folder)
    config = model.config
    max_length = config.text_config.max_text_length
    example = example_inputs(processor, config, EXAMPLE_TEXTS[:2])
    batches = check_batches(processor, config)
    report = {"format": "onnx", "source": str(folder), "projection_dim": config.projection_dim,
              "normalized": False, "image_size": config.vision_config.image_size, "max_text_length": max_length,
              "depths": {stack: getattr(config, f"{stack}_depth") or config.stack_config(stack).num_hidden_layers
                         for stack in ("text", "image", "multimodal")},
              "torch": torch.__version__, "session": {"disabled_optimizers": list(DISABLED_OPTIMIZERS)},
              "graphs": {}, "checks": {}}
    failures = []
    for kind in graphs:
        module = GRAPHS[kind](model).eval()
        path = output / f"{kind}.onnx"
        export_graph(module, example, path, max_length)
        entry = {"file": path.name, "inputs": [{"name": name, "dtype": INPUT_DTYPES[name], "axes": INPUT_AXES[name]}
                                                for name in module.input_names],
                 "outputs": [{"name": module.output_name, "dtype": "float32", "axes": ["batch", "projection"]}]}
        variants = [(kind, path, FP32_MIN_COSINE)]
        if quantize == "int8":
            quantized = output / f"{kind}_int8.onnx"
            quantize_int8(path, quantized)
            entry["int8_file"] = quantized.name
            variants.append((f"{kind}_int8", quantized, INT8_MIN_COSINE))
        report["graphs"][kind] = entry
        for name, variant_path, threshold in variants:
            check = compare_with_eager(module, variant_path, batches)
            check.update(threshold=threshold, passed=check["min_cosine"] >= threshold,
                         size_mb=round(variant_path.stat().st_size / 2**20, 2))
            report["checks"][name] = check
            if verbose:
                print(f"{name:16s} {variant_path.name:22s} {check['size_mb']:8.2f} MB  min cosine vs eager "
                      f"{check['min_cosine']:.6f} (>= {threshold}), max |diff| {check['max_abs_diff']:.2e} on "
                      f"{check['rows']} rows" + (f" ({check['padded_rows']} padded)" if check["padded_rows"] else "")
                      + ("" if check["passed"] else "  FAILED"), flush=True)
            if not check["passed"]:
                failures.append(f"{name}: min cosine {check['min_cosine']:.6f} < {threshold}")
    processor.save_pretrained(output)
    (output / ONNX_CONFIG_NAME).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    if failures:
        raise RuntimeError(f"The exported graphs in {output} differ from eager PyTorch: " + "; ".join(failures))
    return report


def add_export_parser(subcommands) -> None:
    """The `commercemm export` subcommand (registered by cli.py)."""
    from .cli import add_flag

    parser = subcommands.add_parser("export", help="export the text, image and multimodal embeddings for serving")
    parser.add_argument("folder", help="a saved CommerceMM folder")
    add_flag(parser, "--format", choices=["onnx"], default="onnx")
    add_flag(parser, "--quantize", choices=list(QUANTIZATIONS), default=None,
                        help="also write int8 graphs (ONNX Runtime dynamic quantisation)")
    add_flag(parser, "--output", default=None, help="output folder (default: FOLDER/onnx)")
    add_flag(parser, "--graphs", nargs="+", choices=list(GRAPHS), default=list(GRAPHS))
    parser.set_defaults(handler=lambda args: export_onnx(args.folder, args.output, args.quantize, tuple(args.graphs)))


__all__ = ["DISABLED_OPTIMIZERS", "GRAPHS", "ONNX_CONFIG_NAME", "export_onnx", "quantize_int8", "session"]

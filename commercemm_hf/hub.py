"""Hub-ready folders: weights (safetensors), config with `auto_map`, processor files and the remote code.

`save_hub_folder` writes what `AutoModel` / `AutoProcessor` / `pipeline(..., trust_remote_code=True)` need to load a
CommerceMM model where `commercemm_hf` is not installed; `commercemm publish` (see `cli.py`) adds the model card and
uploads the folder.
"""

import json
import os
import shutil
from pathlib import Path

from transformers import PreTrainedModel, ProcessorMixin


def save_hub_folder(model: PreTrainedModel, processor: ProcessorMixin, folder: str | os.PathLike) -> Path:
    """Save `model` and `processor` into `folder` so it loads with the Auto classes, with or without the package.

    Example:
        >>> import tempfile
        >>> from transformers import AutoModel
        >>> from commercemm_hf import create_model_and_processor
        >>> from commercemm_hf.hub import save_hub_folder
        >>> model, processor = create_model_and_processor("tiny", texts=["red mug", "blue lamp"] * 5, vocab_size=300)
        >>> folder = save_hub_folder(model, processor, tempfile.mkdtemp())
        >>> sorted(path.name for path in folder.glob("*.json"))  # doctest: +NORMALIZE_WHITESPACE
        ['config.json', 'config_sentence_transformers.json', 'modules.json', 'processor_config.json',
         'sentence_commercemm_config.json', 'tokenizer.json', 'tokenizer_config.json']
        >>> type(AutoModel.from_pretrained(folder, trust_remote_code=True)).__name__
        'CommerceMMModel'
    """
    from .pipelines import custom_pipelines_for, pipeline_code_files

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    # custom pipelines (product-search, ...) travel in the config with their code, as `Pipeline.save_pretrained`
    # would write them
    pipelines = custom_pipelines_for(model)
    if pipelines:
        model.config.custom_pipelines = pipelines
        for code_file in pipeline_code_files():
            shutil.copy(code_file, folder / code_file.name)
    model.save_pretrained(folder)
    _copy_auto_map_code(model.config, folder)
    processor.save_pretrained(folder)
    if "product-embedding" in pipelines:
        write_sentence_transformers_config(folder)
    stray = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl"))
    if stray:
        raise RuntimeError(f"{folder} holds pickle-format files {stray}: CommerceMM folders carry safetensors only.")
    return folder


#: the sentence-transformers module of a saved folder (its code file travels beside the pipelines' files)
SENTENCE_MODULE = "sentence_commercemm.CommerceMMSentenceEncoder"


def write_sentence_transformers_config(folder: str | os.PathLike) -> None:
    """Write what `SentenceTransformer(folder, trust_remote_code=True)` reads: `modules.json` naming the CommerceMM
    module (one module: it embeds texts, images and {text, image} products, normalised), its config and
    `config_sentence_transformers.json` (cosine similarity), with the module's code file."""
    from . import __version__
    from .pipelines import PIPELINE_FOLDER

    folder = Path(folder)
    shutil.copy(PIPELINE_FOLDER / f"{SENTENCE_MODULE.split('.')[0]}.py", folder)
    files = {
        "modules.json": [{"idx": 0, "name": "0", "path": "", "type": SENTENCE_MODULE}],
        "sentence_commercemm_config.json": {"text_depth": None, "image_depth": None, "multimodal_depth": None},
        "config_sentence_transformers.json": {"model_type": "SentenceTransformer", "prompts": {},
                                              "default_prompt_name": None, "similarity_fn_name": "cosine",
                                              "__version__": {"commercemm_hf": __version__}},
    }
    for name, content in files.items():
        (folder / name).write_text(json.dumps(content, indent=2) + "\n", encoding="utf-8")


def _copy_auto_map_code(config, folder: Path) -> None:
    """Copy the module of every class that `config.auto_map` names, with its relative imports, into `folder`.

    `save_pretrained` copies the code of the model class being saved only, while the config can name more: a base
    model saved from a pretraining run shares its config with `CommerceMMForPreTraining`, whose checkpoints added
    `AutoModelForPreTraining` to `auto_map`. Without its file, publishing refuses the folder and that Auto class
    cannot load it."""
    from transformers.dynamic_module_utils import get_relative_import_files

    from . import modeling

    code_dir = Path(modeling.__file__).parent
    references = []
    for value in (config.auto_map or {}).values():
        references += value if isinstance(value, (list, tuple)) else [value]
    for reference in references:
        if not isinstance(reference, str) or "--" in reference:  # None, or code in another repository
            continue
        module_file = code_dir / f"{reference.rsplit('.', 1)[0]}.py"
        if not module_file.is_file():
            raise FileNotFoundError(f"config.auto_map names {reference}, whose module {module_file} does not exist.")
        for path in [module_file, *map(Path, get_relative_import_files(module_file))]:
            if not (folder / path.name).exists():
                shutil.copy(path, folder / path.name)


__all__ = ["save_hub_folder", "write_sentence_transformers_config"]

"""CommerceMM pipelines, registered with transformers' `PIPELINE_REGISTRY` when `commercemm_hf` is imported.

- `product-embedding`: text / image / multimodal embeddings of items (`CommerceMMModel` folders);
- `product-search`: index a catalog once, query it by text, image or both (`CommerceMMModel` folders);
- `product-categorization`: top-k labels of a fine-tuned `CommerceMMForProductCategorization`.

Each is registered with transformers' own Auto class as `pt_model` (a process without the package resolves it by
name) and written into a saved folder's `config.custom_pipelines` by `commercemm_hf.hub.save_hub_folder`, with its code
files, so `pipeline(task, model=folder, trust_remote_code=True)` works where the package is not installed.
"""

from pathlib import Path

from transformers import AutoModel, AutoModelForSequenceClassification
from transformers.pipelines import PIPELINE_REGISTRY

from .pipeline_commercemm_categorization import CommerceMMCategorizationPipeline
from .pipeline_commercemm_embedding import CommerceMMEmbeddingPipeline
from .pipeline_commercemm_index import ProductIndex
from .pipeline_commercemm_search import CommerceMMProductSearchPipeline


#: task -> (pipeline class, transformers Auto class that loads its model, the model class names it serves)
PIPELINES = {
    "product-embedding": (CommerceMMEmbeddingPipeline, AutoModel, ("CommerceMMModel",)),
    "product-search": (CommerceMMProductSearchPipeline, AutoModel, ("CommerceMMModel",)),
    "product-categorization": (CommerceMMCategorizationPipeline, AutoModelForSequenceClassification,
                               ("CommerceMMForProductCategorization",)),
}

PIPELINE_FOLDER = Path(__file__).parent


def register_pipelines():
    for task, (pipeline_class, auto_class, _) in PIPELINES.items():
        PIPELINE_REGISTRY.register_pipeline(task, pipeline_class=pipeline_class, pt_model=auto_class, type="multimodal")


def custom_pipelines_for(model) -> dict[str, dict]:
    """The `config.custom_pipelines` entries for a model (the format `Pipeline.save_pretrained` writes)."""
    entries = {}
    for task, (pipeline_class, auto_class, model_classes) in PIPELINES.items():
        if type(model).__name__ in model_classes:
            entries[task] = {"impl": f"{pipeline_class.__module__.split('.')[-1]}.{pipeline_class.__name__}",
                             "pt": [auto_class.__name__], "tf": [], "type": "multimodal"}
    return entries


def pipeline_code_files() -> list[Path]:
    """The files a folder needs for its custom pipelines (each pipeline file and the shared input, index and shard
    modules they import)."""
    return sorted(PIPELINE_FOLDER.glob("pipeline_commercemm_*.py"))


__all__ = ["PIPELINES", "ProductIndex", "custom_pipelines_for", "pipeline_code_files", "register_pipelines",
           "CommerceMMCategorizationPipeline", "CommerceMMEmbeddingPipeline", "CommerceMMProductSearchPipeline"]

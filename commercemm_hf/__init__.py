"""commercemm-hf: CommerceMM (Yu et al., KDD 2022) as a Hugging Face transformers model package.

Importing the package registers CommerceMM with transformers' Auto classes, so `AutoModel.from_pretrained(folder)`
and `AutoProcessor.from_pretrained(folder)` work without `trust_remote_code`; saved folders also carry the code
(`auto_map`) so they load with `trust_remote_code=True` where the package is not installed.

Example:
    >>> import commercemm_hf
    >>> from transformers import AutoConfig
    >>> AutoConfig.for_model("commercemm").model_type
    'commercemm'
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    AutoModelForSequenceClassification,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)

from .modeling import (
    CommerceMMConfig,
    CommerceMMForPreTraining,
    CommerceMMForPreTrainingOutput,
    CommerceMMForProductCategorization,
    CommerceMMForRetrieval,
    CommerceMMFusionConfig,
    CommerceMMItemOutput,
    CommerceMMModel,
    CommerceMMMultimodalConfig,
    CommerceMMOutput,
    CommerceMMPreTrainedModel,
    CommerceMMTextConfig,
    CommerceMMVisionConfig,
)
from .processing import CommerceMMImageProcessor, CommerceMMProcessor, train_commercemm_tokenizer


__version__ = "0.1.0"


def _register_auto_classes() -> None:
    """Register with transformers' Auto classes and mark classes so `save_pretrained` writes `auto_map` + code."""
    AutoConfig.register(CommerceMMConfig.model_type, CommerceMMConfig, exist_ok=True)
    for sub_config in (CommerceMMTextConfig, CommerceMMVisionConfig, CommerceMMMultimodalConfig):
        AutoConfig.register(sub_config.model_type, sub_config, exist_ok=True)
    AutoModel.register(CommerceMMConfig, CommerceMMModel, exist_ok=True)
    AutoModelForZeroShotImageClassification.register(CommerceMMConfig, CommerceMMModel, exist_ok=True)
    AutoModelForPreTraining.register(CommerceMMConfig, CommerceMMForPreTraining, exist_ok=True)
    CommerceMMConfig.register_for_auto_class()
    CommerceMMModel.register_for_auto_class("AutoModel")
    CommerceMMForPreTraining.register_for_auto_class("AutoModelForPreTraining")
    AutoModelForImageClassification.register(CommerceMMConfig, CommerceMMForProductCategorization, exist_ok=True)
    AutoModelForSequenceClassification.register(CommerceMMConfig, CommerceMMForProductCategorization, exist_ok=True)
    CommerceMMForProductCategorization.register_for_auto_class("AutoModelForSequenceClassification")
    AutoImageProcessor.register(CommerceMMConfig, slow_image_processor_class=CommerceMMImageProcessor, exist_ok=True)
    AutoProcessor.register(CommerceMMConfig, CommerceMMProcessor, exist_ok=True)
    CommerceMMImageProcessor.register_for_auto_class("AutoImageProcessor")
    CommerceMMProcessor.register_for_auto_class("AutoProcessor")


_register_auto_classes()

from .pipelines import register_pipelines  # noqa: E402


register_pipelines()

from .encoding import CommerceMMEncoder  # noqa: E402
from .factory import create_model_and_processor  # noqa: E402


__all__ = [
    "CommerceMMConfig",
    "CommerceMMEncoder",
    "CommerceMMForPreTraining",
    "CommerceMMForPreTrainingOutput",
    "CommerceMMForProductCategorization",
    "CommerceMMForRetrieval",
    "CommerceMMFusionConfig",
    "CommerceMMMultimodalConfig",
    "CommerceMMImageProcessor",
    "CommerceMMItemOutput",
    "CommerceMMModel",
    "CommerceMMOutput",
    "CommerceMMPreTrainedModel",
    "CommerceMMProcessor",
    "CommerceMMTextConfig",
    "CommerceMMVisionConfig",
    "create_model_and_processor",
    "train_commercemm_tokenizer",
]

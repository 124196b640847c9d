from .configuration_commercemm import (
    EMBEDDING_KINDS,
    IMAGE_TEXT_TASKS,
    OMNI_SOURCE_TYPES,
    OMNI_TASKS,
    PRETRAINING_TASKS,
    CommerceMMConfig,
    CommerceMMFusionConfig,
    CommerceMMMultimodalConfig,
    CommerceMMTextConfig,
    CommerceMMVisionConfig,
)
from .modeling_commercemm import CommerceMMItemOutput, CommerceMMModel, CommerceMMOutput, CommerceMMPreTrainedModel
from .modeling_commercemm_pretraining import CommerceMMForPreTraining, CommerceMMForPreTrainingOutput
from .modeling_commercemm_tasks import (
    RETRIEVAL_TASKS,
    CommerceMMForProductCategorization,
    CommerceMMForRetrieval,
    CommerceMMRetrievalOutput,
)

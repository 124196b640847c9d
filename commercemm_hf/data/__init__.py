from ..evaluation.baselines import demo_baselines
from .demo_catalog import DEMO_CATEGORIES, DEMO_LABELS, build_demo_catalog
from .loading import LoadReport, load_image_text_dataset, load_omni_dataset
from .schema import OMNI_FEATURES, SOURCE_TYPES, to_image_text_rows, to_omni_rows

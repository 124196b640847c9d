"""A SYNTHETIC commerce catalog for demos, examples and tests, generated in code (DESIGN.md section 3).

Nothing here is real: every product is drawn with PIL and numpy from a seeded plan, and every title, description,
post caption and search query comes from templates. The catalog is small enough for CPU and fully deterministic
(the same arguments give byte-identical images and texts), yet not trivial to solve:

* 24 product types in a two-level taxonomy (`DEMO_CATEGORIES`), each with its own silhouette;
* 12 colours, 6 patterns, 8 materials (rendered as texture, grain and sheen) and 10 brands (a small badge with a
  letter on the product);
* products come in *families* that share type, colour and shape and differ only in pattern, brand or material,
  so colour alone cannot identify a product;
* other views (angle, crop, scale, rotation, background, lighting), tagged posts (the product small in a cluttered
  scene with distractor shapes and fragments of other products, a caption with hashtags that does not always name
  the colour) and partial search queries in English, Spanish, German and French.

This module is the catalog's front door; the code lives in `commercemm_hf.data.demo` by job (`vocabulary`,
`drawings`, `photography`, `texts`, `catalog`), and the row schema and converters in `commercemm_hf.data.schema`
(re-exported here for callers that import them from this module).

Example:
    >>> from commercemm_hf.data.demo_catalog import build_demo_catalog, to_omni_rows
    >>> catalog = build_demo_catalog(num_products=20, seed=0)
    >>> sorted(catalog)
    ['test', 'train', 'validation']
    >>> row = catalog["train"][0]
    >>> row["image"].size, len(row["views"]), len(row["queries"])
    ((96, 96), 2, 3)
    >>> sorted(set(to_omni_rows(catalog["train"])["source_type"]))
    ['post', 'query', 'view']
"""

from .demo.catalog import build_demo_catalog, demo_catalog_features, plan_catalog
from .demo.photography import render_product
from .demo.vocabulary import (
    ATTRIBUTE_NAMES,
    BRANDS,
    CATEGORY_OF,
    COLOURS,
    DEMO_CATEGORIES,
    DEMO_LABELS,
    DESCRIPTION,
    MATERIALS,
    PATTERNS,
    PRODUCT_TYPES,
    QUERY_LANGUAGES,
    DemoProductSpec,
)
from .schema import OMNI_FEATURES, to_image_text_rows, to_omni_rows


__all__ = [
    "ATTRIBUTE_NAMES", "BRANDS", "CATEGORY_OF", "COLOURS", "DEMO_CATEGORIES", "DEMO_LABELS", "DESCRIPTION",
    "DemoProductSpec", "MATERIALS", "OMNI_FEATURES", "PATTERNS", "PRODUCT_TYPES", "QUERY_LANGUAGES",
    "build_demo_catalog",
    "demo_catalog_features", "plan_catalog", "render_product", "to_image_text_rows", "to_omni_rows",
]

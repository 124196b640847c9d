"""The demo catalog's plan and assembly: `plan_catalog` fixes every product's attributes, `build_demo_catalog`
draws and writes them (in worker processes if asked) into `train` / `validation` / `test` splits.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import numpy as np
from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, Image, List, Value

from .photography import _encode, _other_view, _studio_shot, _tagged_post, render_product
from .texts import _caption, _description, _queries, _title
from .vocabulary import (
    _ACCENTS,
    ATTRIBUTE_NAMES,
    BRANDS,
    CATEGORY_OF,
    COLOURS,
    DEMO_LABELS,
    DESCRIPTION,
    PATTERNS,
    PRODUCT_TYPES,
    QUERY_LANGUAGES,
    DemoProductSpec,
    _choice,
)


def plan_catalog(num_products: int, seed: int) -> list[DemoProductSpec]:
    """The attributes of every product, in catalog order.

    Products come in families of 2 to 5 that share type, colour, material and shape and differ in pattern or
    brand (sometimes material), so many products share colour and type. No two products share all five
    attributes.

    Example:
        >>> specs = plan_catalog(50, seed=0)
        >>> len({(s.kind, s.colour, s.pattern, s.material, s.brand) for s in specs})
        50
    """
    rng = np.random.default_rng([seed, 0])
    kinds, colours, patterns, brands = list(PRODUCT_TYPES), list(COLOURS), list(PATTERNS), list(BRANDS)
    seen: set[tuple] = set()
    specs: list[DemoProductSpec] = []
    family = 0
    while len(specs) < num_products:
        kind, colour = _choice(rng, kinds), _choice(rng, colours)
        materials = PRODUCT_TYPES[kind][4]
        material, pattern, brand = _choice(rng, materials), _choice(rng, patterns), _choice(rng, brands)
        aspect = (float(rng.uniform(0.86, 1.06)), float(rng.uniform(0.86, 1.06)))
        for member in range(int(rng.integers(2, 6))):
            if member:
                change = rng.random()
                if change < 0.45:
                    pattern = _choice(rng, patterns)
                elif change < 0.85:
                    brand = _choice(rng, brands)
                else:
                    material = _choice(rng, materials)
            key = (kind, colour, pattern, material, brand)
            if key in seen or len(specs) >= num_products:
                continue
            seen.add(key)
            specs.append(DemoProductSpec(len(specs), kind, colour, pattern, material, brand,
                                         _choice(rng, _ACCENTS), aspect, family))
        family += 1
    order = rng.permutation(num_products)  # families are not contiguous in catalog order
    return [DemoProductSpec(new_index, *[getattr(specs[old], f) for f in ("kind", "colour", "pattern", "material",
                                                                          "brand", "accent", "aspect", "family")])
            for new_index, old in enumerate(order)]


def _product_row(specs: list[DemoProductSpec], index: int, seed: int, image_size: int, views: int, posts: int,
                 queries: int) -> dict:
    spec = specs[index]
    rng = np.random.default_rng([seed, 2, index])
    work = image_size * 2
    sprite = render_product(spec, work, seed)
    view_images = [_encode(_other_view(sprite, rng), image_size, rng, lighting=1.0) for _ in range(views)]
    post_images = []
    for _ in range(posts):
        neighbours = [int(j) for j in rng.choice(len(specs), size=min(2, len(specs)), replace=False) if j != index]
        others = [render_product(specs[j], work // 2, seed) for j in neighbours[: int(rng.integers(1, 3))]]
        post_images.append(_encode(_tagged_post(sprite, rng, others), image_size, rng, lighting=0.7))
    title, description = _title(spec, rng), _description(spec, rng)
    languages = ["en"] + [
        "en" if rng.random() < 0.45 else _choice(rng, QUERY_LANGUAGES[1:]) for _ in range(max(0, queries - 1))
    ]
    languages = languages[:queries]
    attributes = [f"colour:{spec.colour}", f"pattern:{spec.pattern}", f"material:{spec.material}",
                  f"brand:{spec.brand}"]
    return {
        "product_id": f"demo-{index:05d}",
        "image": {"bytes": _encode(_studio_shot(sprite), image_size), "path": None},
        "title": title,
        "description": description,
        "text": f"{title}. {description}",
        "category": CATEGORY_OF[spec.kind],
        "subcategory": spec.kind,
        "label": DEMO_LABELS.index(spec.kind),
        "attributes": attributes,
        "attribute_labels": [ATTRIBUTE_NAMES.index(name) for name in attributes],
        "views": [{"bytes": data, "path": None} for data in view_images],
        "posts": [{"bytes": data, "path": None} for data in post_images],
        "post_captions": [_caption(spec, rng) for _ in range(posts)],
        "queries": _queries(spec, rng, languages),
        "query_languages": languages,
    }


def _product_rows(args) -> list[dict]:
    specs, indices, *rest = args
    return [_product_row(specs, index, *rest) for index in indices]


def demo_catalog_features() -> Features:
    """The columns of a demo catalog split (see `build_demo_catalog`)."""
    return Features({
        "product_id": Value("string"),
        "image": Image(),
        "title": Value("string"),
        "description": Value("string"),
        "text": Value("string"),
        "category": Value("string"),
        "subcategory": Value("string"),
        "label": ClassLabel(names=list(DEMO_LABELS)),
        "attributes": List(Value("string")),
        "attribute_labels": List(ClassLabel(names=list(ATTRIBUTE_NAMES))),
        "views": List(Image()),
        "posts": List(Image()),
        "post_captions": List(Value("string")),
        "queries": List(Value("string")),
        "query_languages": List(Value("string")),
    })


def build_demo_catalog(num_products: int = 2000, seed: int = 0, image_size: int = 96, views_per_product: int = 2,
                       posts_per_product: int = 1, queries_per_product: int = 3,
                       split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                       num_proc: int | None = None) -> DatasetDict:
    """Generate the SYNTHETIC demo catalog as a `DatasetDict` with `train` / `validation` / `test` splits.

    The products are split (not their views, posts or queries), so no product appears in two splits. Each row is
    one product: `product_id`, `image` (a studio shot, `image_size` px square), `title`, `description`, `text`
    (title + ". " + description), `category` (home / fashion / electronics / sports), `subcategory` (the product
    type), `label` (ClassLabel over `DEMO_LABELS`), `attributes` (e.g. `colour:red`, `pattern:striped`,
    `material:leather`, `brand:acme`) and `attribute_labels` (their indices in `ATTRIBUTE_NAMES`), `views` (other
    shots of the product), `posts` (the product small in a cluttered scene), `post_captions`, `queries` (partial
    attribute phrases in English, Spanish, German or French) and `query_languages`.

    Everything is deterministic in `seed`: images are PNG bytes drawn at twice `image_size` and reduced.
    `num_proc` > 1 draws in worker processes (same result). Images of each product depend only on `(seed, index)`.

    Example:
        >>> catalog = build_demo_catalog(num_products=30, seed=1, image_size=64)
        >>> {split: len(rows) for split, rows in catalog.items()}
        {'train': 24, 'validation': 3, 'test': 3}
        >>> catalog["train"].features["label"].names[:3]
        ['mug', 'lamp', 'vase']
        >>> "SYNTHETIC" in catalog["train"].info.description
        True
    """
    if num_products < 1:
        raise ValueError(f"num_products must be >= 1, got {num_products}.")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}.")
    if min(views_per_product, posts_per_product, queries_per_product) < 0:
        raise ValueError("views_per_product, posts_per_product and queries_per_product must be >= 0.")
    fractions = np.asarray(split_fractions, dtype=np.float64)
    if fractions.shape != (3,) or (fractions < 0).any() or abs(fractions.sum() - 1.0) > 1e-6:
        raise ValueError(f"split_fractions must be three non-negative numbers summing to 1, got {split_fractions}.")

    specs = plan_catalog(num_products, seed)
    settings = (seed, image_size, views_per_product, posts_per_product, queries_per_product)
    if num_proc and num_proc > 1 and num_products >= 4 * num_proc:
        chunks = np.array_split(np.arange(num_products), num_proc * 4)
        with ProcessPoolExecutor(num_proc) as pool:
            parts = pool.map(_product_rows, [(specs, chunk.tolist(), *settings) for chunk in chunks])
            rows = [row for part in parts for row in part]
    else:
        rows = _product_rows((specs, range(num_products), *settings))

    order = np.random.default_rng([seed, 3]).permutation(num_products)
    n_train = int(round(fractions[0] * num_products))
    n_validation = min(num_products - n_train, int(round(fractions[1] * num_products)))
    bounds = {"train": (0, n_train), "validation": (n_train, n_train + n_validation),
              "test": (n_train + n_validation, num_products)}
    features = demo_catalog_features()
    splits = {}
    for split, (start, stop) in bounds.items():
        members = sorted(order[start:stop].tolist())
        columns = {name: [rows[i][name] for i in members] for name in features}
        info = DatasetInfo(description=DESCRIPTION, features=features)
        splits[split] = Dataset.from_dict(columns, features=features, info=info, split=split)
    return DatasetDict(splits)

"""The synthetic demo catalog: determinism, splits, taxonomy, multilingual queries, converters, non-triviality."""

from collections import Counter

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Image, List
from PIL import Image as PILImage

from commercemm_hf.data.baselines import (
    bag_of_words_retrieval,
    colour_histogram_retrieval,
    colour_histograms,
    demo_baselines,
    tfidf_scores,
)
from commercemm_hf.data.demo_catalog import (
    ATTRIBUTE_NAMES,
    CATEGORY_OF,
    DEMO_CATEGORIES,
    DEMO_LABELS,
    PRODUCT_TYPES,
    build_demo_catalog,
    plan_catalog,
    to_image_text_rows,
    to_omni_rows,
)


def _tables_equal(a: DatasetDict, b: DatasetDict) -> bool:
    return sorted(a) == sorted(b) and all(a[split].data.table.equals(b[split].data.table) for split in a)


def test_same_seed_gives_identical_bytes_and_other_seed_differs():
    first = build_demo_catalog(num_products=16, seed=3, image_size=48)
    again = build_demo_catalog(num_products=16, seed=3, image_size=48)
    other = build_demo_catalog(num_products=16, seed=4, image_size=48)
    assert _tables_equal(first, again)
    assert not _tables_equal(first, other)
    raw = lambda catalog: [row["bytes"] for split in sorted(catalog)  # noqa: E731
                           for row in catalog[split].cast_column("image", Image(decode=False))["image"]]
    assert raw(first) == raw(again)
    assert raw(first) != raw(other)


def test_worker_processes_give_the_same_catalog():
    assert _tables_equal(build_demo_catalog(num_products=24, seed=5, image_size=32),
                         build_demo_catalog(num_products=24, seed=5, image_size=32, num_proc=2))


def test_splits_are_by_product(small_demo_catalog):
    assert sorted(small_demo_catalog) == ["test", "train", "validation"]
    assert [len(small_demo_catalog[split]) for split in ("train", "validation", "test")] == [48, 6, 6]
    ids = {split: set(small_demo_catalog[split]["product_id"]) for split in small_demo_catalog}
    assert sum(len(values) for values in ids.values()) == 60
    assert not (ids["train"] & ids["validation"] or ids["train"] & ids["test"] or ids["validation"] & ids["test"])
    assert all(len(small_demo_catalog[split]["product_id"]) == len(ids[split]) for split in small_demo_catalog)


def test_taxonomy_labels_and_features(small_demo_catalog, medium_demo_catalog):
    assert len(DEMO_LABELS) >= 20 and len(set(DEMO_LABELS)) == len(DEMO_LABELS)
    assert len(DEMO_CATEGORIES) >= 3 and all(len(kinds) >= 4 for kinds in DEMO_CATEGORIES.values())
    features = small_demo_catalog["train"].features
    assert isinstance(features["label"], ClassLabel) and features["label"].names == list(DEMO_LABELS)
    assert isinstance(features["image"], Image)
    assert isinstance(features["views"], List) and isinstance(features["views"].feature, Image)
    assert features["attribute_labels"].feature.names == list(ATTRIBUTE_NAMES)
    assert "SYNTHETIC" in small_demo_catalog["train"].info.description
    assert len(set(medium_demo_catalog["subcategory"])) >= 20
    assert len(set(medium_demo_catalog["category"])) == len(DEMO_CATEGORIES)
    for row in medium_demo_catalog.select(range(50)):
        assert row["category"] == CATEGORY_OF[row["subcategory"]]
        assert DEMO_LABELS[row["label"]] == row["subcategory"]
        assert row["text"] == f"{row['title']}. {row['description']}"
        assert [ATTRIBUTE_NAMES[i] for i in row["attribute_labels"]] == row["attributes"]
        assert [a.split(":")[0] for a in row["attributes"]] == ["colour", "pattern", "material", "brand"]
        assert row["attributes"][2].split(":")[1] in PRODUCT_TYPES[row["subcategory"]][4]


def test_rows_have_views_posts_and_multilingual_queries(small_demo_catalog, medium_demo_catalog):
    row = small_demo_catalog["train"][0]
    assert row["image"].size == (96, 96) and row["image"].mode == "RGB"
    assert len(row["views"]) == 2 and len(row["posts"]) == 1 and len(row["post_captions"]) == 1
    assert all(image.size == (96, 96) for image in row["views"] + row["posts"])
    assert len(row["queries"]) == len(row["query_languages"]) == 3
    assert "#" in row["post_captions"][0]
    raw = small_demo_catalog["train"].cast_column("image", Image(decode=False))
    raw = raw.cast_column("views", List(Image(decode=False)))
    for product in raw.select(range(10)):
        assert all(view["bytes"] != product["image"]["bytes"] for view in product["views"])
    languages = Counter(language for languages in medium_demo_catalog["query_languages"] for language in languages)
    assert {"en", "es", "de", "fr"} <= set(languages)
    assert languages["en"] < sum(languages.values()) * 0.8
    captions = [caption for captions in medium_demo_catalog["post_captions"] for caption in captions]
    colours = [row.split(":")[1] for attributes in medium_demo_catalog["attributes"] for row in attributes[:1]]
    named = sum(colour in caption for colour, caption in zip(colours, captions))
    assert 0.2 * len(captions) < named < 0.8 * len(captions)  # captions often leave the colour out
    assert len({title.split()[0] for title in medium_demo_catalog["title"]}) > 20  # varied title templates


def test_other_sizes_and_counts():
    catalog = build_demo_catalog(num_products=5, seed=2, image_size=40, views_per_product=3, posts_per_product=2,
                                 queries_per_product=4, split_fractions=(0.6, 0.2, 0.2))
    row = catalog["train"][0]
    assert row["image"].size == (40, 40)
    assert len(row["views"]) == 3 and len(row["posts"]) == 2 and len(row["queries"]) == 4
    assert sum(len(split) for split in catalog.values()) == 5


@pytest.mark.parametrize("kwargs", [
    {"num_products": 0}, {"split_fractions": (0.5, 0.2, 0.2)}, {"split_fractions": (1.2, -0.1, -0.1)},
    {"image_size": 4}, {"views_per_product": -1},
])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        build_demo_catalog(**{"num_products": 4, **kwargs})


def test_families_share_colour_and_type():
    specs = plan_catalog(300, seed=0)
    assert len({(s.kind, s.colour, s.pattern, s.material, s.brand) for s in specs}) == 300
    by_kind_colour = Counter((s.kind, s.colour) for s in specs)
    shared = sum(count for count in by_kind_colour.values() if count > 1)
    assert shared > 0.6 * len(specs)
    # siblings differing only in pattern, and others differing only in brand
    keys = {(s.kind, s.colour, s.material, s.brand) for s in specs}
    assert len(keys) < len(specs) - 20
    keys = {(s.kind, s.colour, s.material, s.pattern) for s in specs}
    assert len(keys) < len(specs) - 20


def test_image_text_rows(small_demo_catalog):
    rows = to_image_text_rows(small_demo_catalog["train"])
    assert rows.column_names == ["image", "text", "label", "attribute_labels", "product_id"]
    assert len(rows) == len(small_demo_catalog["train"])
    assert isinstance(rows.features["image"], Image) and isinstance(rows.features["label"], ClassLabel)
    assert rows[3]["image"].size == (96, 96) and rows[3]["text"] == small_demo_catalog["train"][3]["text"]
    with_views = to_image_text_rows(small_demo_catalog, include_views=True)
    assert isinstance(with_views, DatasetDict)
    assert len(with_views["train"]) == 3 * len(small_demo_catalog["train"])
    assert Counter(with_views["train"]["product_id"]) == dict.fromkeys(small_demo_catalog["train"]["product_id"], 3)


def test_omni_rows(small_demo_catalog):
    omni = to_omni_rows(small_demo_catalog["validation"])
    products = small_demo_catalog["validation"]
    assert isinstance(omni, Dataset) and omni.column_names == [
        "source_type", "source_text", "source_image", "product_id", "image", "text"]
    assert isinstance(omni.features["source_image"], Image) and isinstance(omni.features["image"], Image)
    assert Counter(omni["source_type"]) == {"query": 3 * len(products), "view": 2 * len(products),
                                            "post": len(products)}
    text_of = dict(zip(products["product_id"], products["text"]))
    for row in omni:
        assert row["text"] == text_of[row["product_id"]]
        assert isinstance(row["image"], PILImage.Image)
        if row["source_type"] == "query":
            assert row["source_image"] is None and row["source_text"]
        elif row["source_type"] == "view":
            assert row["source_text"] is None and isinstance(row["source_image"], PILImage.Image)
        else:
            assert "#" in row["source_text"] and isinstance(row["source_image"], PILImage.Image)
    first = products[0]
    assert list(omni["source_text"][:3]) == first["queries"]
    assert set(to_omni_rows(small_demo_catalog)) == {"train", "validation", "test"}


def test_baseline_helpers():
    red, blue = PILImage.new("RGB", (8, 8), "red"), PILImage.new("RGB", (8, 8), "blue")
    histograms = colour_histograms([red, blue, red])
    assert histograms.shape == (3, 512)
    assert float(histograms[0] @ histograms[2]) == pytest.approx(1.0) and float(histograms[0] @ histograms[1]) == 0.0
    scores = tfidf_scores(["red mug", "Rucksack grün", "nothing matches"], ["a red mug", "blue lamp", "grün rucksack"])
    assert scores.argmax(dim=1)[:2].tolist() == [0, 2]
    assert float(scores[2].abs().sum()) == 0.0


def test_catalog_is_not_trivial(medium_demo_catalog):
    """Colour alone cannot tell views apart, nor word overlap queries: both baselines stay below Recall@1 0.6."""
    results = demo_baselines(medium_demo_catalog)
    view = results["view_to_product_colour_histogram"]
    query = results["query_to_product_tfidf"]
    print({name: round(metrics["recall@1"], 3) for name, metrics in results.items()})
    assert view["recall@1"] < 0.6 and query["recall@1"] < 0.6
    assert results["post_to_product_colour_histogram"]["recall@1"] < 0.6
    # ... yet the baselines are better than chance, so the pictures and texts carry the signal
    assert view["recall@10"] > 10 / len(medium_demo_catalog) and query["recall@10"] > 10 / len(medium_demo_catalog)
    english = bag_of_words_retrieval(medium_demo_catalog, languages=["en"])["recall@1"]
    others = bag_of_words_retrieval(medium_demo_catalog, languages=["es", "de", "fr"])["recall@1"]
    assert english > others  # other languages share few words with the English product texts
    assert colour_histogram_retrieval(medium_demo_catalog, "views", bins=4)["recall@1"] < 0.6

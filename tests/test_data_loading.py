"""Loading users' data: files with relative image paths, saved datasets, image folders, Hub names; bad rows."""

import csv
import json
import warnings

import datasets
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Image
from PIL import Image as PILImage

from commercemm_hf.data import checks as checking
from commercemm_hf.data import loading, reading
from commercemm_hf.data.demo_catalog import build_demo_catalog, to_image_text_rows, to_omni_rows
from commercemm_hf.data.loading import BadRowWarning, LoadReport, load_image_text_dataset, load_omni_dataset


def _cache(tmp_path):
    return {"cache_dir": str(tmp_path / "hf-cache")}


ROWS = [
    {"path": "images/red.png", "caption": "Red mug", "category": "mug"},
    {"path": "images/missing.png", "caption": "Lost lamp", "category": "lamp"},
    {"path": "images/corrupt.png", "caption": "Broken vase", "category": "vase"},
    {"path": "images/blue.png", "caption": "   ", "category": "mug"},
    {"path": "images/truncated.jpg", "caption": "Half a hat", "category": "hat"},
    {"path": "images/green.png", "caption": "Green lamp", "category": "lamp"},
]
EXPECTED_SKIPS = {1: "image file not found", 2: "unreadable image file", 3: "empty text", 4: "unreadable image file"}


def _write_jsonl(path, rows):
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")


def _check_skips(dataset, report, expected=EXPECTED_SKIPS, total=len(ROWS)):
    assert [row.index for row in report.skipped] == sorted(expected)
    for row in report.skipped:
        assert expected[row.index] in row.reason
    assert report.num_read == total and report.num_kept == len(dataset) == total - len(expected)
    assert report.num_kept + report.num_skipped == report.num_read
    assert isinstance(dataset.features["image"], Image)


def _warned_rows(record) -> list[str]:
    return [str(w.message) for w in record if issubclass(w.category, BadRowWarning)]


def test_jsonl_with_relative_paths_skips_and_counts_bad_rows(image_files_folder, tmp_path):
    _write_jsonl(image_files_folder / "rows.jsonl", ROWS)
    with pytest.warns(BadRowWarning) as record:
        dataset, report = load_image_text_dataset(image_files_folder / "rows.jsonl", image_column="path",
                                                  text_column="caption", label_column="category", **_cache(tmp_path))
    _check_skips(dataset, report)
    messages = _warned_rows(record)
    for index, reason in EXPECTED_SKIPS.items():
        assert any(f"row {index} " in message and reason in message for message in messages)
    assert dataset.column_names == ["image", "text", "label"]
    assert list(dataset["text"]) == ["Red mug", "Green lamp"] and list(dataset["label"]) == ["mug", "lamp"]
    assert dataset[0]["image"].size == (12, 10) and dataset[1]["image"].getpixel((0, 0)) == (0, 128, 0)
    assert report.reasons()["image: image file not found"] == 1
    assert "skipped 4" in str(report)


def test_csv_and_absolute_paths(image_files_folder, tmp_path):
    rows = [dict(row, path=str(image_files_folder / row["path"])) if i % 2 else row for i, row in enumerate(ROWS)]
    with open(image_files_folder / "rows.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "caption", "category"])
        writer.writeheader()
        writer.writerows(rows)
    with pytest.warns(BadRowWarning):
        dataset, report = load_image_text_dataset(str(image_files_folder / "rows.csv"), image_column="path",
                                                  text_column="caption", **_cache(tmp_path))
    _check_skips(dataset, report)
    assert dataset.column_names == ["image", "text", "category"]  # unused columns are kept


def test_raise_names_the_row(image_files_folder, tmp_path):
    _write_jsonl(image_files_folder / "rows.jsonl", ROWS)
    with pytest.raises(ValueError, match=r"row 1 .*image file not found.*\(3 more bad rows\)"):
        load_image_text_dataset(image_files_folder / "rows.jsonl", image_column="path", text_column="caption",
                                on_bad_rows="raise", **_cache(tmp_path))
    _write_jsonl(image_files_folder / "empty.jsonl", [ROWS[0], ROWS[3]])
    with pytest.raises(ValueError, match=r"row 1 .*empty text"):
        load_image_text_dataset(image_files_folder / "empty.jsonl", image_column="path", text_column="caption",
                                on_bad_rows="raise", **_cache(tmp_path))
    with pytest.raises(ValueError, match="on_bad_rows"):
        load_image_text_dataset(image_files_folder / "empty.jsonl", on_bad_rows="ignore")


@pytest.mark.parametrize("kind", ["jsonl", "saved"])
def test_checks_are_cached_by_fingerprint_and_report_the_same_rows(kind, image_files_folder, tmp_path, monkeypatch):
    _write_jsonl(image_files_folder / "rows.jsonl", ROWS)
    source = image_files_folder / "rows.jsonl"
    if kind == "saved":  # a dataset with cache image_files_folder of its own: datasets caches the check beside them
        rows = reading.read_data_file(source, {"caption"})
        rows = rows.remove_columns([loading.LINE_COLUMN, loading.PROBLEM_COLUMN])
        rows.save_to_disk(str(image_files_folder / "saved"))
        source = image_files_folder / "saved"
    opened = []
    real = checking._open_check
    monkeypatch.setattr(checking, "_open_check", lambda *args, **kwargs: opened.append(1) or real(*args, **kwargs))

    def load(**options):
        with pytest.warns(BadRowWarning) as record:
            dataset, report = load_image_text_dataset(source, image_column="path", text_column="caption",
                                                      **{**(_cache(tmp_path) if kind == "jsonl" else
                                                            {"image_root": image_files_folder}), **options})
        return dataset, report, _warned_rows(record)

    first, first_report, first_warnings = load()
    checks = len(opened)
    assert checks == 5  # each image once (one row has no image file to open)
    again, report, warned = load()
    assert len(opened) == checks  # read from the cache: no image opened again
    assert report.skipped == first_report.skipped and report.rows_read == first_report.rows_read
    assert report.rows_kept == first_report.rows_kept and warned == first_warnings
    assert list(again["text"]) == list(first["text"]) == ["Red mug", "Green lamp"]
    cached = list((tmp_path / "hf-cache" / "commercemm_checks").glob("check-*.arrow")) if kind == "jsonl" else \
        list(source.glob("cache-*.arrow"))
    assert len(cached) == 1
    # other options are another fingerprint: checked again
    _, lenient, _ = load(require_text=False)
    assert len(opened) == 2 * checks and 3 not in [row.index for row in lenient.skipped]
    # an image replaced in place keeps its cached result until the check is asked for again
    (image_files_folder / "images" / "green.png").write_bytes(b"broken now")
    _, stale, _ = load()
    assert stale.skipped == first_report.skipped
    _, fresh, _ = load(load_from_cache_file=False)
    assert [row.index for row in fresh.skipped] == [*sorted(EXPECTED_SKIPS), 5]


def test_num_proc_checks_in_several_processes_with_the_same_report(image_files_folder, tmp_path):
    _write_jsonl(image_files_folder / "rows.jsonl", ROWS * 2)
    with pytest.warns(BadRowWarning):
        dataset, report = load_image_text_dataset(image_files_folder / "rows.jsonl", image_column="path",
                                                  text_column="caption",
                                                  num_proc=2, **_cache(tmp_path))
    assert [row.index for row in report.skipped] == [*sorted(EXPECTED_SKIPS), *(i + 6 for i in sorted(EXPECTED_SKIPS))]
    assert list(dataset["text"]) == ["Red mug", "Green lamp"] * 2
    assert len(list((tmp_path / "hf-cache" / "commercemm_checks").glob("check-*_of_00002.arrow"))) == 2


def test_image_root_for_in_memory_data(image_files_folder):
    data = Dataset.from_dict({"image": ["images/red.png", "images/missing.png"], "text": ["red", "gone"]})
    with pytest.warns(BadRowWarning, match="row 1 "):
        dataset, report = load_image_text_dataset(data, image_root=image_files_folder)
    assert len(dataset) == 1 and dataset[0]["image"].size == (12, 10)
    assert str(image_files_folder / "images" / "missing.png") in report.skipped[0].reason


def test_embedded_images_survive_moving_files(image_files_folder, tmp_path):
    _write_jsonl(image_files_folder / "rows.jsonl", [ROWS[0]])
    dataset, _ = load_image_text_dataset(image_files_folder / "rows.jsonl", image_column="path", text_column="caption",
                                         embed_images=True, **_cache(tmp_path))
    (image_files_folder / "images" / "red.png").unlink()
    assert dataset[0]["image"].getpixel((1, 1)) == (255, 0, 0)


def test_text_from_several_columns_and_product_ids(image_files_folder, tmp_path):
    rows = [{"image": "images/red.png", "title": "Red mug", "description": "Ceramic.", "sku": 17},
            {"image": "images/blue.png", "title": "", "description": "Only a description", "sku": None}]
    _write_jsonl(image_files_folder / "rows.jsonl", rows)
    with pytest.warns(BadRowWarning, match="missing product_id"):
        dataset, report = load_image_text_dataset(image_files_folder / "rows.jsonl",
                                                  text_column=["title", "description"], product_id_column="sku",
                                                  **_cache(tmp_path))
    assert list(dataset["text"]) == ["Red mug. Ceramic."] and list(dataset["product_id"]) == ["17"]
    assert report.skipped[0].index == 1


def test_column_errors(image_files_folder, tmp_path):
    _write_jsonl(image_files_folder / "rows.jsonl", ROWS[:1])
    with pytest.raises(ValueError, match="caption"):
        load_image_text_dataset(image_files_folder / "rows.jsonl", image_column="path", **_cache(tmp_path))
    _write_jsonl(image_files_folder / "clash.jsonl", [{"path": "images/red.png", "text": "a", "caption": "b"}])
    with pytest.raises(ValueError, match="already has"):
        load_image_text_dataset(image_files_folder / "clash.jsonl", image_column="path", text_column="caption",
                                **_cache(tmp_path))
    with pytest.raises(FileNotFoundError):
        load_image_text_dataset(image_files_folder / "nope.jsonl")
    with pytest.raises(FileNotFoundError):
        load_image_text_dataset("./not/here")


def test_save_to_disk_round_trip(tmp_path):
    catalog = build_demo_catalog(num_products=12, seed=0, image_size=32)
    rows = to_image_text_rows(catalog)
    rows.save_to_disk(tmp_path / "saved")
    loaded, report = load_image_text_dataset(tmp_path / "saved", label_column="label")
    assert isinstance(loaded, DatasetDict) and report.num_skipped == 0
    for split in rows:
        assert list(loaded[split]["text"]) == list(rows[split]["text"])
        assert list(loaded[split]["label"]) == list(rows[split]["label"])
    assert isinstance(loaded["train"].features["label"], ClassLabel)
    assert loaded["train"][0]["image"].tobytes() == rows["train"][0]["image"].tobytes()
    test_only, _ = load_image_text_dataset(tmp_path / "saved", split="test")
    assert isinstance(test_only, Dataset) and len(test_only) == len(rows["test"])
    rows["train"].save_to_disk(tmp_path / "one")
    one, _ = load_image_text_dataset(str(tmp_path / "one"))
    assert isinstance(one, Dataset) and len(one) == len(rows["train"])


def test_image_folder(image_files_folder, tmp_path):
    folder = image_files_folder / "images"
    metadata = [{"file_name": "red.png", "text": "Red mug"}, {"file_name": "corrupt.png", "text": "Broken"},
                {"file_name": "blue.png", "text": "Blue lamp"}, {"file_name": "green.png", "text": ""}]
    _write_jsonl(folder / "metadata.jsonl", metadata)
    for name in ("full.jpg", "truncated.jpg"):
        (folder / name).unlink()
    with pytest.warns(BadRowWarning):
        loaded, report = load_image_text_dataset(folder, **_cache(tmp_path))
    assert isinstance(loaded, DatasetDict)
    dataset = loaded["train"]
    assert sorted(dataset["text"]) == ["Blue lamp", "Red mug"]
    assert sorted(row.reason.split(" (")[0] for row in report.skipped) == ["image: unreadable image file",
                                                                            "text: empty text"]
    assert report.rows_read == {"train": 4} and report.rows_kept == {"train": 2}
    with pytest.warns(BadRowWarning):
        only, _ = load_image_text_dataset(folder, split="train", on_bad_rows="skip", **_cache(tmp_path))
    assert isinstance(only, Dataset) and len(only) == 2


def test_hub_name_goes_to_load_dataset(monkeypatch):
    png = PILImage.new("RGB", (4, 4), "red")
    local = Dataset.from_dict({"img": [png, png], "caption": ["red", "red too"]}).cast_column("img", Image())
    calls = []

    def fake_load_dataset(name, split=None, **kwargs):
        calls.append((name, split, kwargs))
        return local if split else DatasetDict({"train": local})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    dataset, report = load_image_text_dataset("someone/products", split="train", image_column="img",
                                              text_column="caption", revision="main")
    assert calls == [("someone/products", "train", {"revision": "main"})]
    assert len(dataset) == 2 and report.source == "someone/products"
    assert dataset[0]["image"].size == (4, 4)
    whole, _ = loading.load_image_text_dataset("someone/products", image_column="img", text_column="caption")
    assert isinstance(whole, DatasetDict)


def test_many_bad_rows_limit_the_warnings(image_files_folder, tmp_path):
    rows = [{"image": "images/missing.png", "text": f"row {i}"} for i in range(30)] + [
        {"image": "images/red.png", "text": "kept"}]
    _write_jsonl(image_files_folder / "rows.jsonl", rows)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        dataset, report = load_image_text_dataset(image_files_folder / "rows.jsonl", max_warnings=5, **_cache(tmp_path))
    messages = _warned_rows(record)
    assert len(messages) == 6 and "25 more" in messages[-1]
    assert report.num_skipped == 30 and len(dataset) == 1


def test_omni_round_trip_from_disk(tmp_path):
    catalog = build_demo_catalog(num_products=10, seed=1, image_size=32)
    omni = to_omni_rows(catalog["train"])
    omni.save_to_disk(tmp_path / "omni")
    loaded, report = load_omni_dataset(tmp_path / "omni")
    assert report.num_skipped == 0 and not report.cleared and len(loaded) == len(omni)
    assert loaded.column_names == omni.column_names
    assert list(loaded["source_type"]) == list(omni["source_type"])
    assert list(loaded["source_text"]) == list(omni["source_text"])
    for name in ("source_image", "image"):
        assert isinstance(loaded.features[name], Image)
    assert loaded[3]["source_image"] is not None and loaded[0]["source_image"] is None


def test_omni_jsonl_bad_rows_and_inferred_types(image_files_folder, tmp_path):
    product = {"sku": "P1", "product_image": "images/red.png", "title": "Red mug"}
    rows = [
        {**product, "kind": "query", "query": "red mug", "photo": None},
        {**product, "kind": "view", "query": None, "photo": "images/blue.png"},
        {**product, "kind": "post", "query": "my mug #acme", "photo": "images/green.png"},
        {**product, "kind": "query", "query": "  ", "photo": None},  # empty query
        {**product, "kind": "review", "query": "meh", "photo": None},  # unknown type
        {**product, "kind": "view", "query": None, "photo": "images/corrupt.png"},
        {**product, "kind": "post", "query": None, "photo": "images/green.png"},  # post without caption
        {**product, "sku": None, "kind": "query", "query": "red", "photo": None},  # no product id
        {**product, "product_image": "images/missing.png", "kind": "query", "query": "mug", "photo": None},
        {**product, "kind": "view", "query": "extra words", "photo": "images/blue.png"},  # text cleared
    ]
    _write_jsonl(image_files_folder / "omni.jsonl", rows)
    columns = dict(source_type_column="kind", source_text_column="query", source_image_column="photo",
                   product_id_column="sku", image_column="product_image", text_column="title")
    with pytest.warns(BadRowWarning) as record:
        dataset, report = load_omni_dataset(image_files_folder / "omni.jsonl", **columns, **_cache(tmp_path))
    expected = {3: "empty query text", 4: "unknown source_type", 5: "unreadable image file",
                6: "empty post caption", 7: "missing product_id", 8: "image file not found"}
    assert {row.index: row.reason for row in report.skipped}.keys() == expected.keys()
    for row in report.skipped:
        assert expected[row.index] in row.reason
    assert len(_warned_rows(record)) == len(expected)
    assert list(dataset["source_type"]) == ["query", "view", "post", "view"]
    assert dataset[3]["source_text"] is None and report.cleared == {"source_text of view rows": 1}
    assert report.num_read == 10 and report.num_kept == 4
    with pytest.raises(ValueError, match="row 3 "):
        load_omni_dataset(image_files_folder / "omni.jsonl", on_bad_rows="raise", **columns, **_cache(tmp_path))

    # without a type column the type follows from what each row has
    with pytest.warns(BadRowWarning) as record:
        inferred, report = load_omni_dataset(image_files_folder / "omni.jsonl",
                                             **dict(columns, source_type_column=None), **_cache(tmp_path))
    assert any("row 3 " in message and "neither a source text nor a source image" in message
               for message in _warned_rows(record))
    assert list(inferred["source_type"])[:3] == ["query", "view", "post"]


def test_omni_views_only_without_text_column(image_files_folder, tmp_path):
    rows = [{"source_image": "images/blue.png", "product_id": "P1", "image": "images/red.png", "text": "Red mug"}]
    _write_jsonl(image_files_folder / "views.jsonl", rows)
    dataset, report = load_omni_dataset(image_files_folder / "views.jsonl", **_cache(tmp_path))
    assert list(dataset["source_type"]) == ["view"] and dataset[0]["source_text"] is None
    with pytest.raises(ValueError, match="caption_text"):
        load_omni_dataset(image_files_folder / "views.jsonl", source_text_column="caption_text", **_cache(tmp_path))


def test_report_addition_holds_per_split():
    report = LoadReport("x", "image-text", {"train": 3, "test": 2}, {"train": 2, "test": 2})
    assert report.num_read == 5 and report.num_kept == 4

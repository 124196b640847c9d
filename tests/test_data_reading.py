"""Data files read as written: ids and texts as strings, bad lines skipped and counted with their line number,
relative image paths from the data file's folder only (issue 14)."""

import json
import os
import warnings

import pytest
from datasets import Dataset
from PIL import Image as PILImage

from commercemm_hf.data.loading import load_image_text_dataset, load_omni_dataset


def _load(path, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_image_text_dataset(path, **kwargs)


def test_csv_ids_and_texts_stay_as_written(red_png_folder):
    (red_png_folder / "rows.csv").write_text(
        "image,text,sku\n" + "".join(f"red.png,{title},{sku}\n" for title, sku in
                                     [("NA", "00123"), ("None", "123"), ("null", "1001"), ("N/A", ""),
                                      ("nan", "0042"), ("Mug", "1002")]), encoding="utf-8")
    rows, report = _load(red_png_folder / "rows.csv", product_id_column="sku")
    assert list(rows["product_id"]) == ["00123", "123", "1001", "0042", "1002"]  # no 123 twice, no 1001.0
    assert list(rows["text"]) == ["NA", "None", "null", "nan", "Mug"]  # NA-like titles are titles
    assert [(row.index, row.line) for row in report.skipped] == [(3, 5)]
    assert "missing product_id" in report.skipped[0].reason


def test_tsv_fields_are_literal(red_png_folder):
    (red_png_folder / "rows.tsv").write_text('image\ttext\nred.png\t"Best" mug\nred.png\t"quoted"\n', encoding="utf-8")
    rows, _ = _load(red_png_folder / "rows.tsv")
    assert list(rows["text"]) == ['"Best" mug', '"quoted"']


def test_json_big_int_ids_exact_and_non_string_texts_named(red_png_folder):
    big = 2**64
    lines = [{"image": "red.png", "text": "a", "sku": big + 1}, {"image": "red.png", "text": "b", "sku": big + 2},
             {"image": "red.png", "text": ["x", "y"], "sku": 1}, {"image": "red.png", "text": {"k": 1}, "sku": 2},
             {"image": "red.png", "text": True, "sku": 3}, {"image": "red.png", "text": "c", "sku": 1001.0}]
    (red_png_folder / "rows.jsonl").write_text("\n".join(map(json.dumps, lines)), encoding="utf-8")
    rows, report = _load(red_png_folder / "rows.jsonl", product_id_column="sku")
    assert list(rows["product_id"]) == [str(big + 1), str(big + 2)]
    reasons = {row.index: row.reason for row in report.skipped}
    assert reasons.keys() == {2, 3, 4, 5}
    assert "text: not a string (list" in reasons[2] and "text: not a string (dict" in reasons[3]
    assert "text: not a string (bool" in reasons[4] and "sku: not a string (float 1001.0)" in reasons[5]
    # a .json array reads the same way
    (red_png_folder / "rows.json").write_text(json.dumps(lines), encoding="utf-8")
    rows, report = _load(red_png_folder / "rows.json", product_id_column="sku")
    assert list(rows["product_id"]) == [str(big + 1), str(big + 2)] and report.num_skipped == 4


def test_in_memory_float_ids_and_list_texts_are_bad_rows(red_png_folder):
    data = Dataset.from_dict({"image": ["red.png"] * 2, "text": ["a", "b"], "sku": [1001.0, None]})
    with pytest.raises(ValueError, match=r"row 0 .*product_id: not a string \(float 1001.0\)"):
        load_image_text_dataset(data, product_id_column="sku", image_root=red_png_folder, on_bad_rows="raise")
    texts = Dataset.from_dict({"image": ["red.png"] * 2, "text": [["a", "b"], ["c"]]})
    with pytest.raises(ValueError, match=r"all 2 rows are bad.*text: not a string \(list"):
        load_image_text_dataset(texts, image_root=red_png_folder)


def test_bad_lines_are_skipped_and_counted_with_their_line(red_png_folder):
    good = json.dumps({"image": "red.png", "text": "Red mug"})
    data = "\n".join([good, "{not json", good, "", "[1, 2]", '{"image": "red.png", "text": "\\ud800"}', good])
    (red_png_folder / "rows.jsonl").write_bytes(data.encode() + b'\n{"image": "red.png", "text": "caf\xe9"}\n')
    rows, report = _load(red_png_folder / "rows.jsonl")
    assert len(rows) == 3 and report.num_read == 7 and report.num_kept + report.num_skipped == report.num_read
    skipped = {row.line: row.reason for row in report.skipped}
    assert skipped.keys() == {2, 5, 6, 8}
    assert "invalid JSON" in skipped[2] and "not a JSON object" in skipped[5]
    assert "lone surrogate" in skipped[6] and "not valid UTF-8" in skipped[8]
    with pytest.raises(ValueError, match=r"row 1 \(0-based, line 2\).*invalid JSON"):
        load_image_text_dataset(red_png_folder / "rows.jsonl", on_bad_rows="raise")

    (red_png_folder / "rows.csv").write_bytes(b"image,text\nred.png,Mug\nred.png,Mug,extra\nred.png,caf\xe9\n"
                                      b'red.png,"two\nlines"\nred.png,Last\n')
    rows, report = _load(red_png_folder / "rows.csv")
    assert list(rows["text"]) == ["Mug", "two\nlines", "Last"]
    assert [(row.index, row.line) for row in report.skipped] == [(1, 3), (2, 4)]
    assert "2 fields" not in report.skipped[0].reason and "3 fields, the header has 2" in report.skipped[0].reason
    assert "not valid UTF-8" in report.skipped[1].reason


def test_empty_files_are_zero_rows(red_png_folder):
    for name in ("empty.jsonl", "empty.csv", "empty.tsv"):
        (red_png_folder / name).write_bytes(b"")
        rows, report = _load(red_png_folder / name)
        assert len(rows) == 0 and report.num_read == 0 and {"image", "text"} <= set(rows.column_names)
    (red_png_folder / "header.csv").write_text("image,text,extra\n", encoding="utf-8")
    rows, report = _load(red_png_folder / "header.csv")
    assert len(rows) == 0 and rows.column_names == ["image", "text", "extra"]
    omni, report = load_omni_dataset(red_png_folder / "empty.jsonl")
    assert len(omni) == 0 and report.num_read == 0


def test_every_row_bad_is_an_error_naming_the_first(red_png_folder):
    (red_png_folder / "rows.jsonl").write_text(
        "\n".join(json.dumps({"picture": "red.png", "text": "Mug"}) for _ in range(3)),
                                       encoding="utf-8")
    with pytest.raises(ValueError, match=r"No usable rows.*all 3 rows are bad.*row 0 .*image file not found"):
        load_image_text_dataset(red_png_folder / "rows.jsonl", image_column="text", text_column="text")


def test_relative_paths_never_come_from_the_working_directory(red_png_folder, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    PILImage.new("RGB", (8, 8), "blue").save(elsewhere / "blue.png")
    monkeypatch.chdir(elsewhere)
    (red_png_folder / "rows.jsonl").write_text("\n".join(json.dumps({"image": name, "text": "Mug"})
                                                 for name in ("red.png", "blue.png")), encoding="utf-8")
    rows, report = _load(red_png_folder / "rows.jsonl")
    assert len(rows) == 1 and rows[0]["image"].getpixel((0, 0)) == (255, 0, 0)
    assert report.skipped[0].index == 1 and str(red_png_folder / "blue.png") in report.skipped[0].reason


def test_urls_and_named_pipes_are_named_not_fetched_or_opened(red_png_folder):
    os.mkfifo(red_png_folder / "pipe.png")
    lines = [{"image": "https://example.com/a.png", "text": "Mug"}, {"image": "pipe.png", "text": "Mug"},
             {"image": "red.png", "text": "Mug"}]
    (red_png_folder / "rows.jsonl").write_text("\n".join(map(json.dumps, lines)), encoding="utf-8")
    rows, report = _load(red_png_folder / "rows.jsonl")
    reasons = [row.reason for row in report.skipped]
    assert len(rows) == 1 and "image URL not fetched" in reasons[0] and "not a regular file" in reasons[1]


def test_split_slicing_of_a_file(red_png_folder):
    (red_png_folder / "rows.csv").write_text("image,text\n" + "red.png,Mug\n" * 10, encoding="utf-8")
    rows, report = _load(red_png_folder / "rows.csv", split="train[:4]")
    assert len(rows) == 4 and report.num_read == 4
    rows, _ = _load(red_png_folder / "rows.csv", split="train[50%:]")
    assert len(rows) == 5


def test_image_folder_metadata_csv_is_read_as_written(red_png_folder):
    for split in ("train", "test"):
        (red_png_folder / split).mkdir()
        PILImage.new("RGB", (8, 8), "red").save(red_png_folder / split / "a.png")
        (red_png_folder / split / "metadata.csv").write_text("file_name,text,sku\na.png,NA,00123\nb.png,Lamp,7\n",
                                                     encoding="utf-8")
    rows, report = _load(red_png_folder, product_id_column="sku")
    assert sorted(rows) == ["test", "train"]
    assert list(rows["train"]["product_id"]) == ["00123"] and list(rows["test"]["text"]) == ["NA"]
    assert report.rows_read == {"train": 2, "test": 2}
    assert "image file not found" in report.skipped[0].reason and report.skipped[0].line == 3
    only, _ = _load(red_png_folder, split="test[:1]", product_id_column="sku")
    assert len(only) == 1 and only[0]["image"].size == (8, 8)
    with pytest.raises(ValueError, match=r"has splits \['test', 'train'\], not 'validation'"):
        load_image_text_dataset(red_png_folder, split="validation")


def test_folder_of_split_files_is_read_as_written(red_png_folder):
    (red_png_folder / "train.csv").write_text("image,text,sku\nred.png,null,0001\n", encoding="utf-8")
    (red_png_folder / "dev.jsonl").write_text(json.dumps({"image": "red.png", "text": "Mug", "sku": 2**70}),
                                              encoding="utf-8")
    rows, _ = _load(red_png_folder, product_id_column="sku")
    assert list(rows["train"]["product_id"]) == ["0001"] and list(rows["train"]["text"]) == ["null"]
    assert list(rows["validation"]["product_id"]) == [str(2**70)]


def test_csv_quoting_errors_are_bad_lines_not_merged_rows(red_png_folder):
    (red_png_folder / "rows.csv").write_bytes(b'image,text\nred.png,ok\nred.png,"bad"x\nred.png,say "hi" now\n'
                                      b'red.png,"unterminated\nred.png,swallowed\n')
    rows, report = _load(red_png_folder / "rows.csv")
    assert list(rows["text"]) == ["ok", 'say "hi" now']
    assert [(row.line, row.reason.split(" (")[0]) for row in report.skipped] == [
        (3, "unreadable line: unreadable CSV"), (5, "unreadable line: unreadable CSV")]
    assert "unexpected end of data" in report.skipped[1].reason


def test_other_columns_of_mixed_json_types_are_kept_as_exact_strings(red_png_folder):
    lines = [{"image": "red.png", "text": "a", "upc": 2**64 + 7, "size": 3},
             {"image": "red.png", "text": "b", "upc": 12, "size": "XL"}]
    (red_png_folder / "rows.jsonl").write_text("\n".join(map(json.dumps, lines)), encoding="utf-8")
    with pytest.warns(UserWarning, match=r"column 'size' cannot be stored as one type.*first at row 1, line 2"):
        rows, report = load_image_text_dataset(red_png_folder / "rows.jsonl")
    assert list(rows["upc"]) == [str(2**64 + 7), "12"] and list(rows["size"]) == ["3", "XL"]


def _chunked_rows(path, chunk_rows, columns):
    """The rows of each chunk, with the columns of the whole file (a chunk of bad lines only has none: the stream
    fills them in from its features)."""
    from commercemm_hf.data.reading import read_data_file_chunks

    return [{name: row.get(name) for name in columns}
            for table in read_data_file_chunks(path, {"sku", "text"}, chunk_rows=chunk_rows)
            for row in table.to_pylist()]


def test_a_chunked_read_gives_the_whole_files_rows_and_line_numbers(red_png_folder):
    """A big JSON Lines / CSV file is streamed a chunk at a time: the rows, their line numbers and the bad lines'
    reasons are those of the whole-file read, bad lines on either side of a chunk boundary included."""
    from commercemm_hf.data.reading import read_data_file

    good = [json.dumps({"image": "red.png", "text": f"mug {i}", "sku": i}) for i in range(9)]
    lines = good[:3] + ["{not json"] + good[3:4] + ["", "[1]"] + good[4:7] + ['{"text": true, "sku": 1}'] + good[7:]
    (red_png_folder / "rows.jsonl").write_bytes(b"\xef\xbb\xbf" + "\n".join(lines).encode() + b"\n\xff\n")
    csv_text = "sku,text\r\n" + "".join(f'{i},"mug\n{i}"\r\n' if i % 4 == 0 else f"{i},mug {i},x\n" if i == 5
                                        else f"{i},mug {i}\n" for i in range(11))
    (red_png_folder / "rows.csv").write_bytes(csv_text.encode() + b"11,caf\xe9\n")
    for name in ("rows.jsonl", "rows.csv"):
        whole = read_data_file(red_png_folder / name, {"sku", "text"}).to_list()
        for chunk_rows in (1, 2, 3, 4, 100):
            assert _chunked_rows(red_png_folder / name, chunk_rows, list(whole[0])) == whole, (name, chunk_rows)
    whole = read_data_file(red_png_folder / "rows.jsonl", {"sku", "text"}).to_list()
    bad = [(row["__line__"], row["__read_problems__"].split(" (")[0]) for row in whole if row["__read_problems__"]]
    assert bad == [(4, "unreadable line: invalid JSON"), (7, "unreadable line: not a JSON object"),
                   (11, "text: not a string"), (14, "unreadable line: not valid UTF-8")]
    csv_rows = read_data_file(red_png_folder / "rows.csv", {"sku", "text"}).to_list()
    assert [row["__line__"] for row in csv_rows][:6] == [2, 4, 5, 6, 7, 9]  # row 0 and 4 span two lines
    assert csv_rows[5]["text"] is None and "3 fields" in csv_rows[5]["__read_problems__"]


def test_a_streamed_big_file_names_bad_lines_across_chunks(red_png_folder, monkeypatch):
    """One JSON Lines file streamed in chunks of 3 rows: bad lines in the second and third chunk are counted with
    their own line numbers; the stream's column types come from the first chunk, and a later value that does not
    fit is a bad row naming the column, not a crash."""
    from commercemm_hf.data import shards

    monkeypatch.setattr(shards, "CHUNK_ROWS", 3)
    lines = [json.dumps({"image": "red.png", "text": f"mug {i}", "size": i}) for i in range(8)]
    lines[4] = "{oops"
    lines[6] = json.dumps({"image": "red.png", "text": "mug 6", "size": "XL"})
    (red_png_folder / "rows.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows, report = load_image_text_dataset(red_png_folder / "rows.jsonl", streaming=True)
        kept = list(rows)
    assert [row["size"] for row in kept] == [0, 1, 2, 3, 5, 7]
    assert [(row.index, row.line) for row in report.skipped] == [(4, 5), (6, 7)]
    assert "invalid JSON" in report.skipped[0].reason
    assert "size: str 'XL' does not fit the column's type int64" in report.skipped[1].reason
    assert any("line 7 of" in str(w.message) for w in caught)

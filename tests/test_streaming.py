"""Catalog-scale data: both pretraining streams as `datasets.IterableDataset`s (split by process, shuffled with a
buffer, resumed exactly), streamed loading with bad rows counted as they are read, and sharded sources."""

import json
import tarfile
import warnings

import pytest
from datasets import IterableDataset
from helpers import tiny_datasets, write_jsonl
from test_pretraining import Crash, losses_by_step, new_model
from transformers import TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from commercemm_hf.data.checks import ROW_COLUMN, decode_lazy_rows
from commercemm_hf.data.loading import BadRowWarning, load_image_text_dataset, load_omni_dataset
from commercemm_hf.training import CommerceMMPretrainingTrainer


def streamed_trainer(tokenizer, processor, output_dir, callbacks=None, **arguments):
    image_text, omni = tiny_datasets(12)
    # 12 image-text rows in 3 shards, 4 a batch: the main stream starts its second epoch at step 4; 20 Omni rows, 5 a
    # batch: the Omni stream too (both cross an epoch between the checkpoint at 3 and the crash at 5)
    args = TrainingArguments(output_dir, max_steps=6, per_device_train_batch_size=4, report_to=[], seed=0,
                             learning_rate=1e-3, use_cpu=True, disable_tqdm=True, logging_steps=1, save_steps=3,
                             **arguments)
    return CommerceMMPretrainingTrainer(
        model=new_model(tokenizer), args=args, train_dataset=image_text.to_iterable_dataset(num_shards=3),
        omni_dataset=omni.select(range(20)).to_iterable_dataset(num_shards=2), processor=processor,
        omni_batch_size=5, shuffle_buffer_size=8, callbacks=callbacks)


def test_streamed_pretraining_killed_and_resumed_reaches_the_same_losses(tokenizer, processor, tmp_path):
    uninterrupted = streamed_trainer(tokenizer, processor, tmp_path / "a")
    uninterrupted.train()
    crashed = streamed_trainer(tokenizer, processor, tmp_path / "b", callbacks=[Crash(5)])
    with pytest.raises(RuntimeError, match="simulated crash"):
        crashed.train()
    checkpoint = get_last_checkpoint(str(tmp_path / "b"))
    assert checkpoint.endswith("checkpoint-3")
    state = json.loads((tmp_path / "b" / "checkpoint-3" / "commercemm_pretraining_state.json").read_text())
    assert state["omni_position"] == {"epoch": 0, "batches": 3}
    resumed = streamed_trainer(tokenizer, processor, tmp_path / "b")
    resumed.train(resume_from_checkpoint=True)
    expected, got = losses_by_step(uninterrupted), losses_by_step(resumed)
    assert sorted(got) == [1, 2, 3, 4, 5, 6]
    for step in (4, 5, 6):
        for name in ("loss", "mlm_loss", "itc_loss", "omni_text_to_multimodal_loss", "omni_image_to_multimodal_loss"):
            assert got[step][name] == pytest.approx(expected[step][name], rel=1e-4, abs=1e-4), (step, name)
    assert resumed.omni_position == {"epoch": 1, "batches": 2}  # 4 batches an epoch, 6 read


def test_omni_stream_is_shuffled_split_by_process_and_reshuffled_each_epoch(tokenizer, processor, tmp_path,
                                                                             monkeypatch):
    trainer = streamed_trainer(tokenizer, processor, tmp_path)
    ids = lambda loader: [pid for batch in loader for pid in batch["product_index"].tolist()]  # noqa: E731
    first, second = ids(trainer._omni_loader(0, 0)), ids(trainer._omni_loader(1, 0))
    assert len(first) == len(second) == 20 and sorted(first) == sorted(second) and first != second
    assert ids(trainer._omni_loader(0, 0)) == first  # the same epoch, the same order
    assert ids(trainer._omni_loader(0, 2)) == first[10:]  # resumed after two batches
    split = []
    for rank in (0, 1):
        monkeypatch.setattr(TrainingArguments, "world_size", property(lambda self: 2))
        monkeypatch.setattr(TrainingArguments, "process_index", property(lambda self, rank=rank: rank))
        split.append(ids(trainer._omni_loader(0, 0)))
    assert sorted(split[0] + split[1]) == sorted(first) and len(split[0]) == len(split[1]) == 10


def test_streamed_loading_counts_bad_rows_as_they_are_read(tmp_path):
    image_text, _ = tiny_datasets(6)
    path = write_jsonl(image_text, tmp_path, ["image"])
    lines = path.read_text().splitlines()
    lines[3] = json.dumps({**json.loads(lines[3]), "image": "images/missing.png"})
    lines.insert(1, "{not json")
    (tmp_path / "images" / "image_4.png").write_bytes(b"not a png")
    path.write_text("\n".join(lines) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows, report = load_image_text_dataset(path, product_id_column="product_id", streaming=True,
                                               image_check="header")
        assert isinstance(rows, IterableDataset) and report.num_read == 0  # nothing read yet
        kept = list(rows)
    assert [row["product_id"] for row in kept] == ["p0", "p1", "p2", "p5"]
    assert report.rows_read == {"train": 7} and report.rows_kept == {"train": 4}
    assert [(row.index, row.line) for row in report.skipped] == [(1, 2), (4, 5), (5, 6)]
    assert [row.reason.split(" (")[0] for row in report.skipped] == [
        "unreadable line: invalid JSON", "image: image file not found", "image: unreadable image file"]
    assert sum(issubclass(w.category, BadRowWarning) for w in caught) == 3
    with pytest.raises(ValueError, match=r"Bad row 1 \(0-based, line 2 of .*rows.jsonl\)"):
        list(load_image_text_dataset(path, on_bad_rows="raise", streaming=True, image_check="header")[0])


def test_an_iterable_dataset_passed_in_is_checked_lazily(tmp_path):
    _, omni = tiny_datasets(4)
    stream = omni.to_iterable_dataset().map(lambda row, i: {**row, "text": "" if i == 2 else row["text"]},
                                            with_indices=True, features=omni.features)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows, report = load_omni_dataset(stream)
        kept = list(rows)
    assert len(kept) == 11 and report.num_skipped == 1 and report.skipped[0].index == 2


def _shards(tmp_path, image_text):
    """The rows as 2 JSON Lines shards, 2 Parquet shards with embedded bytes, and 2 WebDataset tar shards."""
    source = write_jsonl(image_text, tmp_path / "json", ["image"])
    lines = source.read_text().splitlines()
    source.unlink()
    for part in (0, 1):
        (tmp_path / "json" / f"part-{part}.jsonl").write_text("\n".join(lines[part * 3:part * 3 + 3]) + "\n")
    (tmp_path / "parquet").mkdir()
    for part in (0, 1):
        image_text.select(range(part * 3, part * 3 + 3)).to_parquet(tmp_path / "parquet" / f"part-{part}.parquet")
    (tmp_path / "tar").mkdir()
    for part in (0, 1):
        with tarfile.open(tmp_path / "tar" / f"shard-{part:05d}.tar", "w") as archive:
            for index in range(part * 3, part * 3 + 3):
                row = json.loads(lines[index])
                archive.add(tmp_path / "json" / row["image"], arcname=f"{index:04d}.png")
                text = tmp_path / f"{index}.txt"
                text.write_text(row["text"])
                archive.add(text, arcname=f"{index:04d}.txt")


@pytest.mark.parametrize("streaming", [False, True])
def test_sharded_sources_globs_lists_tars_and_file_urls(tmp_path, streaming):
    image_text, _ = tiny_datasets(6)
    _shards(tmp_path, image_text)
    texts = sorted(image_text["text"])
    sources = {
        "jsonl glob": (str(tmp_path / "json" / "part-*.jsonl"), {}),
        "jsonl list": ([tmp_path / "json" / "part-0.jsonl", tmp_path / "json" / "part-1.jsonl"], {}),
        "parquet glob": (str(tmp_path / "parquet" / "*.parquet"), {}),
        "parquet folder": (tmp_path / "parquet", {}),
        "file:// glob": ("file://" + str(tmp_path / "parquet" / "part-*.parquet"), {}),
        "one tar": (tmp_path / "tar" / "shard-00000.tar", {"image_column": "png", "text_column": "txt"}),
        "tar folder": (tmp_path / "tar", {"image_column": "png", "text_column": "txt"}),
        "tar glob": (str(tmp_path / "tar" / "shard-*.tar"), {"image_column": "png", "text_column": "txt"}),
    }
    for name, (source, columns) in sources.items():
        rows, report = load_image_text_dataset(source, streaming=streaming, **columns)
        # a stream's images are decoded by the collator (image_check="lazy"), as here
        rows = decode_lazy_rows(list(rows)) if streaming else rows
        got = sorted(row["text"] for row in rows)
        assert got == (texts[:3] if name == "one tar" else texts) or name == "one tar" and len(got) == 3, name
        assert all(row["image"].size == (40, 40) for row in rows), name
        assert report.num_skipped == 0, name
    with pytest.raises(FileNotFoundError, match="No file matches the pattern"):
        load_image_text_dataset(str(tmp_path / "json" / "nothing-*.jsonl"), streaming=streaming)


@pytest.mark.parametrize("streaming", [True, False])
def test_the_header_check_skips_a_cut_off_jpeg_whose_header_opens(tmp_path, streaming):
    """A partial download keeps its header (PIL opens it, with size and mode) and fails only at decode time: the
    header check looks for the end marker, so the row is a counted bad row, not a crash in the loader."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "good.jpg", quality=95)
    Image.fromarray(pixels).save(tmp_path / "good.png")
    data = (tmp_path / "good.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:int(len(data) * 0.6)])
    with Image.open(tmp_path / "cut.jpg") as image:
        assert image.size == (64, 64)  # the header alone looks fine
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps({"image": name, "text": "mug"}) + "\n"
                                                 for name in ("good.jpg", "cut.jpg", "good.png")))
    with pytest.warns(BadRowWarning, match=r"row 1 .*cut\.jpg: truncated JPEG file"):
        rows, report = load_image_text_dataset(tmp_path / "rows.jsonl", streaming=streaming, image_check="header")
        sizes = [row["image"].size for row in rows]
    assert sizes == [(64, 64), (64, 64)] and report.rows_kept == {"train": 2} and report.num_skipped == 1


def test_the_default_stream_check_skips_undecodable_images_per_batch_and_trains(tokenizer, processor, tmp_path):
    """The streaming default (image_check="lazy") finds each file as the row is read and leaves the decode to the
    collator: a cut-off JPEG (its header opens) and a corrupt file are left out of their batch, counted in the same
    report as the rows the stream dropped (a missing file, one removed after loading), and named in a warning with
    their index and line; the step trains on the rest."""
    import numpy as np
    from PIL import Image

    image_text, omni = tiny_datasets(8)
    path = write_jsonl(image_text, tmp_path, ["image"])
    lines = path.read_text().splitlines()
    pixels = np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "full.jpg", quality=95)
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:len(data) // 2])
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    Image.fromarray(pixels).save(tmp_path / "removed.png")
    for index, name in ((1, "cut.jpg"), (3, "corrupt.png"), (5, "removed.png"), (6, "missing.png")):
        lines[index] = json.dumps({**json.loads(lines[index]), "image": name})
    path.write_text("\n".join(lines) + "\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows, report = load_image_text_dataset(path, product_id_column="product_id", streaming=True)
        (tmp_path / "removed.png").unlink()  # after loading: the stream finds it missing when it reads the row
        assert rows.features["image"].decode is False and ROW_COLUMN in rows.column_names
        args = TrainingArguments(tmp_path / "out", max_steps=1, per_device_train_batch_size=8, report_to=[],
                                 use_cpu=True, disable_tqdm=True, save_strategy="no")
        trainer = CommerceMMPretrainingTrainer(model=new_model(tokenizer), args=args, train_dataset=rows,
                                               omni_dataset=omni, processor=processor, shuffle_buffer_size=0)
        batch = next(iter(trainer.get_train_dataloader()))
        # 8 rows read: two dropped by the stream (no file), two by the collator
        assert len(batch["input_ids"]) == 4 and report.rows_read == {"train": 8} and report.rows_kept == {"train": 4}
        skipped = {row.index: (row.line, row.reason) for row in report.skipped}
        result = trainer.train()  # reads the stream again: the same rows skipped again
    assert result.global_step == 1 and report.num_skipped == 8
    assert sorted(skipped) == [1, 3, 5, 6] and all(line == index + 1 for index, (line, _) in skipped.items())
    assert "image file not found" in skipped[5][1] and "image file not found" in skipped[6][1]
    for index, name in ((1, "cut.jpg"), (3, "corrupt.png")):
        assert f"unreadable image file ({tmp_path / name}" in skipped[index][1], index
    named = [str(w.message) for w in caught if issubclass(w.category, BadRowWarning)]
    assert any("row 1 (0-based, line 2 of" in message and "cut.jpg" in message for message in named)
    assert any("at collation" in message and "corrupt.png" in message for message in named)


def test_the_omni_collator_leaves_out_rows_whose_source_image_does_not_decode(processor, tmp_path):
    from commercemm_hf import CommerceMMConfig
    from commercemm_hf.training import CommerceMMOmniCollator

    _, omni = tiny_datasets(4)
    path = write_jsonl(omni, tmp_path, ["image", "source_image"])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    corrupt = next(index for index, row in enumerate(rows) if row["source_image"])
    (tmp_path / rows[corrupt]["source_image"]).write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    stream, report = load_omni_dataset(path, streaming=True)
    collator = CommerceMMOmniCollator(processor, CommerceMMConfig.from_preset("tiny"))
    with pytest.warns(BadRowWarning, match=rf"row {corrupt} \(0-based, line {corrupt + 1} of .*source_image: "
                                           r"unreadable image file"):
        batch = collator(list(stream))
    assert len(batch["product_index"]) == len(rows) - 1 == report.num_kept
    assert [row.index for row in report.skipped] == [corrupt] and report.num_read == len(rows)

"""The 7 downstream tasks: zero-shot decisions, fine-tuned heads, and `commercemm evaluate` on the demo catalog and
on a user's JSON Lines file."""

import json

import pytest
import torch
from helpers import EVALUATE_DEMO_PRODUCTS as NUM_PRODUCTS
from helpers import write_jsonl

from commercemm_hf import CommerceMMForProductCategorization
from commercemm_hf.cli import main
from commercemm_hf.evaluation import downstream
from commercemm_hf.evaluation.downstream import DOWNSTREAM_TASKS, downstream_table, evaluate_downstream
from commercemm_hf.hub import save_hub_folder


def test_all_seven_tasks_are_measured_and_in_range(tiny_demo, validation_rows):
    metrics = evaluate_downstream(tiny_demo.extra["model"], tiny_demo.processor, *validation_rows)
    for task in DOWNSTREAM_TASKS:
        assert any(name.startswith(task + "_") for name in metrics), task
    assert all(0.0 <= value <= 1.0 for value in metrics.values())
    assert {"categorization_accuracy", "categorization_macro_f1", "attributes_micro_f1",
            "post_to_product_ndcg@10"} <= set(metrics)
    assert "query_to_product recall@10" in downstream_table({"zero-shot": metrics})


def test_zero_shot_decisions_follow_the_label_names(tiny_demo, validation_rows, monkeypatch):
    """With embeddings where each product matches exactly its class name and its attribute values, zero-shot
    categorization and attribute prediction are perfect: the decision rules are right."""
    rows = validation_rows[0].select(range(6))  # products with distinct texts
    class_names = rows.features["label"].names
    attribute_names = rows.features["attribute_labels"].feature.names
    prompts = list(class_names) + [name.split(":", 1)[1] for name in attribute_names]
    dimension = len(prompts)

    def fake_embed(model, processor, images=None, texts=None, kind="multimodal", batch_size=32, **depths):
        if kind == "text":  # a label prompt: its own axis
            return torch.stack([torch.eye(dimension)[prompts.index(text)] for text in texts])
        vectors = torch.zeros(len(texts), dimension)
        for index, text in enumerate(texts):
            row = rows[list(rows["text"]).index(text)]
            vectors[index, row["label"]] = 1.0
            for attribute in row["attribute_labels"]:
                vectors[index, prompts.index(attribute_names[attribute].split(":", 1)[1])] = 1.0
        return vectors

    monkeypatch.setattr(downstream, "embed", fake_embed)
    scores = downstream.categorization_scores(None, None, rows, product_embeds=fake_embed(None, None, rows["image"],
                                                                                          rows["text"]))
    assert scores == {"accuracy": 1.0, "macro_f1": 1.0}
    attributes = downstream.attribute_scores(None, None, rows, product_embeds=fake_embed(None, None, rows["image"],
                                                                                          rows["text"]))
    assert attributes["accuracy"] == 1.0 and attributes["micro_f1"] == 1.0


def test_fine_tuned_heads_are_used_and_unknown_labels_are_refused(tiny_demo, validation_rows):
    rows = validation_rows[0]
    names = rows.features["label"].names
    head = CommerceMMForProductCategorization(
        tiny_demo.config.__class__.from_dict({**tiny_demo.config.to_dict(), "id2label": dict(enumerate(names)),
                                         "label2id": {name: i for i, name in enumerate(names)}})).eval()
    metrics = evaluate_downstream(tiny_demo.extra["model"], tiny_demo.processor, rows, None, categorization_head=head)
    inputs = tiny_demo.processor(images=list(rows["image"]), text=list(rows["text"]), padding=True, return_tensors="pt")
    with torch.no_grad():
        predictions = head(**{k: v for k, v in inputs.items() if k != "token_type_ids"}).logits.argmax(1)
    assert metrics["categorization_accuracy"] == pytest.approx(
        float((predictions == torch.tensor(rows["label"])).float().mean()))
    wrong = CommerceMMForProductCategorization(
        tiny_demo.config.__class__.from_dict({**tiny_demo.config.to_dict(), "id2label": {0: "sofa", 1: "bicycle"}})
    ).eval()
    with pytest.raises(ValueError, match="labels the model does not know"):
        evaluate_downstream(tiny_demo.extra["model"], tiny_demo.processor, rows, None, categorization_head=wrong)


def test_evaluate_command_on_the_demo_catalog_and_on_a_jsonl_file(tiny_demo, validation_rows, tmp_path, capsys):
    folder = save_hub_folder(tiny_demo.extra["model"], tiny_demo.processor, tmp_path / "model")
    output = tmp_path / "metrics.json"
    main(["evaluate", str(folder), "--num-products", str(NUM_PRODUCTS), "--split", "validation",
          "--output", str(output)])
    printed = capsys.readouterr().out
    assert "SYNTHETIC demo catalog, validation split" in printed and "view_to_product recall@1" in printed
    from_command = json.loads(output.read_text())
    direct = evaluate_downstream(tiny_demo.extra["model"], tiny_demo.processor, *validation_rows)
    assert from_command == pytest.approx(direct)

    names = validation_rows[0].features["label"].names
    rows = validation_rows[0].map(lambda row: {"category_name": names[row["label"]]},
                                  remove_columns=["label", "attribute_labels"])
    path = write_jsonl(rows, tmp_path / "user", ["image"])
    with path.open("a") as handle:  # a bad row: skipped and counted
        handle.write(json.dumps({"image": "missing.png", "text": "lost", "category_name": "mug"}) + "\n")
    main(["evaluate", str(folder), "--image-text-file", str(path), "--label-column", "category_name",
          "--output", str(tmp_path / "user.json")])
    printed = capsys.readouterr().out
    assert "skipped 1" in printed.lower() or "1 skipped" in printed.lower()
    user_metrics = json.loads((tmp_path / "user.json").read_text())
    assert "categorization_accuracy" in user_metrics and "image_to_text_recall@1" in user_metrics
    assert not any(name.startswith("query_to_product") for name in user_metrics)

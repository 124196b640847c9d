"""Publishing: the model card rendered from MODEL_CARD.md, the upload plan (dry run, no network), refusals of folders
that are not Hub-ready, the upload through (faked) huggingface_hub calls, and the token never leaking."""

import json
import logging
import shutil
import socket
import traceback

import huggingface_hub
import pytest
import yaml
from helpers import tiny_config
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.utils import filter_repo_objects

from commercemm_hf import CommerceMMForProductCategorization
from commercemm_hf.cli import main
from commercemm_hf.hub import save_hub_folder
from commercemm_hf.publish import (
    MODEL_CARD_TEMPLATE,
    PublishError,
    UploadFile,
    format_plan,
    plan_upload,
    publish,
    render_model_card,
)


SECRET = "hf_PublishTestSecretToken0123456789abcdef"
REPO = "my-org/commercemm-tiny"
SAVED_FILES = {
    "config.json", "model.safetensors", "configuration_commercemm.py", "modeling_commercemm.py",
    "checks_commercemm.py", "convert_backbones_commercemm.py", "processing_commercemm.py",
    "image_processing_commercemm.py",
    "processor_config.json", "tokenizer.json", "tokenizer_config.json", "pipeline_commercemm_embedding.py",
    "pipeline_commercemm_search.py", "pipeline_commercemm_categorization.py", "pipeline_commercemm_inputs.py",
    "pipeline_commercemm_index.py", "pipeline_commercemm_index_faiss.py", "pipeline_commercemm_index_files.py",
    "pipeline_commercemm_shards.py", "pipeline_commercemm_onnx.py",
    # sentence-transformers loading (issue 17)
    "sentence_commercemm.py", "modules.json", "sentence_commercemm_config.json", "config_sentence_transformers.json",
}


def assert_no_secret(publish_folder, *texts):
    for path in publish_folder.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), f"token written to {path}"
    for text in texts:
        assert SECRET not in text


# ------------------------------------------------------------------------------------------------ dry run and plan
def test_dry_run_lists_the_planned_files_without_network(publish_folder, no_network, capsys):
    (publish_folder / ".cache").mkdir()
    (publish_folder / ".cache" / "upload.lock").write_text("local state")
    result = publish(publish_folder, REPO, dry_run=True)
    out = capsys.readouterr().out
    paths = [file.path for file in result["files"]]
    assert set(paths) == SAVED_FILES | {"README.md"}
    assert all(file.size == (publish_folder / file.path).stat().st_size for file in result["files"])
    assert result["dry_run"] and result["url"] is None
    assert "Dry run: would upload to https://huggingface.co/my-org/commercemm-tiny" in out
    assert all(path in out for path in paths) and ".cache" not in out
    assert f"{len(paths)} files" in out
    assert (publish_folder / "README.md").exists()


def test_plan_upload_and_format_plan(publish_folder):
    plan = plan_upload(publish_folder)
    assert isinstance(plan[0], UploadFile) and [file.path for file in plan] == sorted(SAVED_FILES)
    text = format_plan([UploadFile("config.json", 3710), UploadFile("model.safetensors", 304900)])
    assert "3.7 KB" in text and "304.9 KB" in text and "2 files, 308.6 KB" in text


def test_sharded_weights_are_planned_and_a_missing_shard_is_named(publish_folder):
    (publish_folder / "model.safetensors").rename(publish_folder / "model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    (publish_folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(PublishError, match="model-00002-of-00002.safetensors"):
        plan_upload(publish_folder)
    shutil.copy(publish_folder / "model-00001-of-00002.safetensors",
                publish_folder / "model-00002-of-00002.safetensors")
    assert "model.safetensors.index.json" in {file.path for file in plan_upload(publish_folder)}


# ---------------------------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("name", ["pytorch_model.bin", "training_args.bin", "optimizer.pt", "sub/state.pkl"])
def test_pickle_files_are_refused(publish_folder, no_network, name):
    (publish_folder / name).parent.mkdir(exist_ok=True)
    (publish_folder / name).write_bytes(b"\x80\x04pickled")
    with pytest.raises(PublishError, match=r"pickle-format files .*safetensors only"):
        publish(publish_folder, REPO, dry_run=True)
    assert not (publish_folder / "README.md").exists()


def test_folders_that_are_not_hub_ready_are_refused_with_what_is_missing(publish_folder):
    config = json.loads((publish_folder / "config.json").read_text())
    del config["auto_map"]
    (publish_folder / "config.json").write_text(json.dumps(config))
    (publish_folder / "pipeline_commercemm_inputs.py").unlink()  # imported by the pipeline files that config names
    (publish_folder / "processor_config.json").unlink()
    with pytest.raises(PublishError) as error:
        plan_upload(publish_folder)
    message = str(error.value)
    assert "not Hub-ready" in message and "config.json has no auto_map" in message
    assert "pipeline_commercemm_inputs.py" in message and "processor_config.json" in message

    (publish_folder / "config.json").unlink()
    with pytest.raises(PublishError, match="config.json is missing"):
        plan_upload(publish_folder)


def test_missing_weights_and_modeling_code_are_named(publish_folder):
    (publish_folder / "model.safetensors").unlink()
    (publish_folder / "modeling_commercemm.py").unlink()
    with pytest.raises(PublishError, match=r"(?s)model.safetensors is missing.*modeling_commercemm.py"):
        plan_upload(publish_folder)


def test_bad_repo_id_is_refused(publish_folder, no_network):
    with pytest.raises(PublishError, match="ORG/NAME"):
        publish(publish_folder, "no-namespace", dry_run=True)


# ---------------------------------------------------------------------------------------------------- the card
def test_card_renders_the_folder_and_metrics_with_valid_metadata(publish_folder):
    (publish_folder / "eval_results.json").write_text(json.dumps({
        "eval_query_to_product_recall@10": 0.625, "eval_accuracy": 0.75, "eval_runtime": 3.5, "epoch": 2.0,
    }))
    card = render_model_card(publish_folder, REPO)
    card.save(publish_folder / "README.md")
    text = (publish_folder / "README.md").read_text()
    assert "{{" not in text and "{%" not in text
    for expected in ("| eval_query_to_product_recall@10 | 0.6250 |", "| eval_accuracy | 0.7500 |",
                     "| eval_runtime | 3.5000 |", "From `eval_results.json`", f'AutoModel.from_pretrained("{REPO}"',
                     "trust_remote_code=True", '"product-search"', '"product-embedding"',
                     '"zero-shot-image-classification"', "arXiv:2202.07247", "synthetic", "## Limitations",
                     "MIM-kl", "Omni-Retrieval", "| multimodal encoder | 2 | 32 | 2 |"):
        assert expected in text, expected
    assert '"product-categorization"' not in text  # the base model serves no categorization head

    front = yaml.safe_load(text.split("---\n")[1])
    assert front["library_name"] == "transformers" and front["license"] == "apache-2.0"
    assert front["pipeline_tag"] == "feature-extraction" and "commercemm" in front["tags"]
    assert "zero-shot-image-classification" in front["tags"] and "sentence-transformers" in front["tags"]
    loaded = ModelCard.load(publish_folder / "README.md")
    assert loaded.data.library_name == "transformers"
    results = {result.metric_name: result for result in loaded.data.eval_results}
    assert set(results) == {"eval_query_to_product_recall@10", "eval_accuracy"}  # quality metrics only
    assert results["eval_query_to_product_recall@10"].metric_type == "recall"
    assert results["eval_query_to_product_recall@10"].task_type == "feature-extraction"
    assert results["eval_accuracy"].metric_value == 0.75 and results["eval_accuracy"].dataset_split == "validation"
    assert loaded.data.model_name == "commercemm-tiny"


def test_metrics_sources_in_order(publish_folder, tmp_path):
    demo = {"before": {"query_to_product_mrr": 0.1}, "after": {"query_to_product_mrr": 0.4},
            "baselines": {"text overlap": {"recall@1": 0.2}}, "reload_max_abs_diff": 2e-7,
            "folder": str(publish_folder)}
    (publish_folder.parent / "demo_results.json").write_text(json.dumps(demo))
    card = render_model_card(publish_folder, REPO)  # the parent's demo results name this folder
    assert "| query_to_product_mrr | 0.1000 | 0.4000 |" in card.text and "SYNTHETIC" in card.text
    assert "| baselines/text overlap/recall@1 | 0.2000 |" in card.text and "2e-07" in card.text
    assert [r.metric_value for r in card.data.eval_results] == [0.4]  # after pretraining, not before or baselines
    assert card.data.eval_results[0].dataset_name == "commercemm-hf demo catalog (SYNTHETIC)"

    metrics_file = tmp_path / "my_metrics.json"
    metrics_file.write_text(json.dumps({"test_accuracy": 0.5}))
    from_file = render_model_card(publish_folder, REPO, metrics=metrics_file)
    assert "From `my_metrics.json`" in from_file.text and "query_to_product_mrr" not in from_file.text
    given = render_model_card(publish_folder, REPO, metrics={"macro_f1": 0.3}, training_data="Ten real mugs.",
                              datasets=["my-org/mugs"])
    assert "| macro_f1 | 0.3000 |" in given.text and "Ten real mugs." in given.text
    assert given.data.datasets == ["my-org/mugs"] and given.data.eval_results[0].dataset_type == "my-org/mugs"


def test_results_of_another_folder_are_not_claimed(publish_folder, caplog):
    (publish_folder.parent / "demo_results.json").write_text(
        json.dumps({"after": {"mrr": 0.9}, "folder": "/elsewhere/x"}))
    with caplog.at_level(logging.WARNING):
        card = render_model_card(publish_folder, REPO)
    assert "No metrics were recorded" in card.text and card.data.eval_results is None
    assert "Not recorded in this folder" in card.text  # training data: the publisher must say
    assert "results are for /elsewhere/x" in caplog.text


def test_card_of_a_categorization_folder(tmp_path, processor, tokenizer):
    config = tiny_config(vocab_size=len(tokenizer), id2label={0: "mug", 1: "lamp", 2: "vase"})
    folder = save_hub_folder(CommerceMMForProductCategorization(config), processor, tmp_path / "categorization")
    assert {"modeling_commercemm_tasks.py", "losses_commercemm.py"} <= {file.path for file in plan_upload(folder)}
    card = render_model_card(folder, REPO)
    assert "a categorization head with 3 labels (mug, lamp, vase)" in card.text
    assert '"product-categorization"' in card.text and "AutoModelForSequenceClassification" in card.text
    assert '"zero-shot-image-classification"' not in card.text and card.data.pipeline_tag is None


def test_template_is_the_repository_model_card():
    assert MODEL_CARD_TEMPLATE.name == "MODEL_CARD.md" and MODEL_CARD_TEMPLATE.is_file()
    text = MODEL_CARD_TEMPLATE.read_text()
    assert "{{ repo_id }}" in text and "{{ metrics_table }}" in text and "library_name: transformers" in text


# ---------------------------------------------------------------------------------------------------- uploading
def test_upload_calls_huggingface_hub_with_the_plan_and_never_leaks_the_token(publish_folder, fake_hub, capsys, caplog,
                                                                              no_stored_token):
    (publish_folder / ".git").mkdir()
    (publish_folder / ".git" / "config").write_text("[core]")
    (publish_folder / "notes.txt").write_text("uploaded too: it is in the plan")
    with caplog.at_level(logging.DEBUG):
        result = publish(publish_folder, REPO, token=SECRET, private=True, commit_message="first upload")
    captured = capsys.readouterr()
    assert [name for name, _ in fake_hub] == ["create_repo", "upload_folder"]
    create, upload = fake_hub[0][1], fake_hub[1][1]
    assert create == {"repo_id": REPO, "token": SECRET, "private": True, "repo_type": "model", "exist_ok": True}
    assert upload["repo_id"] == REPO and upload["folder_path"] == str(publish_folder) and upload["token"] == SECRET
    assert upload["repo_type"] == "model" and upload["commit_message"] == "first upload"
    planned = [file.path for file in result["files"]]
    assert set(planned) == SAVED_FILES | {"README.md", "notes.txt"}
    # what huggingface_hub would send, filtered by the patterns we pass, is exactly the plan
    local = [path.relative_to(publish_folder).as_posix() for path in publish_folder.rglob("*") if path.is_file()]
    sent = filter_repo_objects(local, allow_patterns=upload["allow_patterns"],
                               ignore_patterns=upload["ignore_patterns"])
    assert sorted(sent) == sorted(planned)
    assert result["url"].endswith("/commit/abc123") and f"Uploaded {len(planned)} files" in captured.out
    assert_no_secret(publish_folder, captured.out, captured.err, caplog.text, repr(result), str(result))


def test_token_from_the_environment_and_errors_without_it(publish_folder, fake_hub, monkeypatch, no_stored_token,
                                                           capsys):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    publish(publish_folder, REPO)
    assert fake_hub[0][1]["token"] == SECRET and fake_hub[0][1]["private"] is None
    monkeypatch.delenv("HF_TOKEN")
    fake_hub.clear()
    (publish_folder / "README.md").unlink()
    with pytest.raises(PublishError, match="No Hugging Face token found.*--dry-run") as error:
        publish(publish_folder, REPO)
    assert not fake_hub and not (publish_folder / "README.md").exists()  # failed before writing or calling anything
    assert_no_secret(publish_folder, str(error.value), capsys.readouterr().out)


def test_hub_errors_that_echo_the_token_are_redacted(publish_folder, monkeypatch, no_stored_token, capsys):
    def failing_create_repo(self, repo_id, **kwargs):
        raise RuntimeError(f"401 Unauthorized for token {kwargs['token']}")

    monkeypatch.setattr(HfApi, "create_repo", failing_create_repo)
    with pytest.raises(RuntimeError, match=r"401 Unauthorized for token \*\*\*") as error:
        publish(publish_folder, REPO, token=SECRET)
    printed = "".join(traceback.format_exception(error.value))  # the original error is not chained in
    assert_no_secret(publish_folder, printed, repr(error.value), capsys.readouterr().out)


# ---------------------------------------------------------------------------------------------------- the CLI
def test_cli_publish_dry_run_and_upload(publish_folder, fake_hub, monkeypatch, no_stored_token, capsys, tmp_path):
    metrics = tmp_path / "metrics.json"
    metrics.write_text(json.dumps({"query_to_product_recall@1": 0.25}))
    main(["publish", str(publish_folder), "--repo-id", REPO, "--dry-run", "--metrics", str(metrics)])
    out = capsys.readouterr().out
    assert "Dry run" in out and "model.safetensors" in out and not fake_hub
    assert "| query_to_product_recall@1 | 0.2500 |" in (publish_folder / "README.md").read_text()

    monkeypatch.setenv("MY_HUB_TOKEN", SECRET)
    main(["publish", str(publish_folder), "--repo-id", REPO, "--token-env", "MY_HUB_TOKEN", "--private",
          "--training-data", "Our 10k product photos."])
    captured = capsys.readouterr()
    assert fake_hub[0][1]["token"] == SECRET and fake_hub[0][1]["private"] is True
    assert fake_hub[1][1]["commit_message"] == "Upload CommerceMM model (commercemm-hf)"
    assert "Our 10k product photos." in (publish_folder / "README.md").read_text()
    assert_no_secret(publish_folder, captured.out, captured.err)


def test_cli_publish_errors(publish_folder, fake_hub, no_stored_token):
    with pytest.raises(SystemExit, match="UNSET_VAR.*is not set"):
        main(["publish", str(publish_folder), "--repo-id", REPO, "--token-env", "UNSET_VAR"])
    with pytest.raises(SystemExit, match="No Hugging Face token found"):
        main(["publish", str(publish_folder), "--repo-id", REPO])
    (publish_folder / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(SystemExit, match="commercemm publish: .*pickle-format"):
        main(["publish", str(publish_folder), "--repo-id", REPO, "--dry-run"])
    assert not fake_hub


# ------------------------------------------------------------------------------------- bad folders (issue 14)
@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:-100], "truncated"),
    (lambda data: b"", "0 bytes: too short"),
    (lambda data: data[:20], "header claims"),
    (lambda data: data + b"\0" * 16, "trailing bytes"),
])
def test_safetensors_whose_header_does_not_cover_the_file_are_refused(publish_folder, no_network, damage, message):
    weights = publish_folder / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(PublishError, match=rf"model.safetensors.*{message}"):
        publish(publish_folder, REPO, dry_run=True)
    assert not (publish_folder / "README.md").exists()


def test_links_out_of_the_folder_are_refused(publish_folder, no_network, tmp_path):
    secret = tmp_path / "elsewhere" / "credentials.txt"
    secret.parent.mkdir()
    secret.write_text("not for the Hub")
    (publish_folder / "notes.txt").write_text("inside")
    (publish_folder / "inside-link.txt").symlink_to(publish_folder / "notes.txt")
    assert "inside-link.txt" in {file.path for file in plan_upload(publish_folder)}  # a link within the folder is fine
    (publish_folder / "extra.txt").symlink_to(secret)
    with pytest.raises(PublishError, match=r"links that leave the folder.*extra.txt -> .*credentials.txt"):
        plan_upload(publish_folder)
    (publish_folder / "extra.txt").unlink()
    (publish_folder / "more").symlink_to(secret.parent, target_is_directory=True)
    with pytest.raises(PublishError, match=r"links that leave the folder.*more -> "):
        publish(publish_folder, REPO, dry_run=True)


def test_a_readme_publish_did_not_write_is_never_overwritten(publish_folder, fake_hub, no_stored_token, capsys):
    handwritten = "# Our model\n\nWritten by hand.\n"
    (publish_folder / "README.md").write_text(handwritten)
    publish(publish_folder, REPO, dry_run=True)
    assert (publish_folder / "README.md").read_text() == handwritten and "Keeping" in capsys.readouterr().out
    publish(publish_folder, REPO, token=SECRET)
    assert (publish_folder / "README.md").read_text() == handwritten
    assert "README.md" in list(fake_hub[1][1]["allow_patterns"])

    (publish_folder / "README.md").unlink()
    publish(publish_folder, REPO, dry_run=True, training_data="First description.")
    assert "First description." in (publish_folder / "README.md").read_text()
    publish(publish_folder, REPO, dry_run=True, training_data="Second description.")  # its own card: renewed
    generated = (publish_folder / "README.md").read_text()
    assert "Second description." in generated and "First description." not in generated
    (publish_folder / "README.md").write_text(generated.replace("Second description.", "Edited by a person."))
    publish(publish_folder, REPO, dry_run=True, training_data="Third description.")  # edited since: kept
    assert "Edited by a person." in (publish_folder / "README.md").read_text()


def _torch_pickle(path):
    import torch
    torch.save({"w": torch.ones(2)}, path)


def _numpy_objects(path):
    import numpy as np
    with open(path, "wb") as handle:
        np.save(handle, np.array([{"a": 1}], dtype=object), allow_pickle=True)


@pytest.mark.parametrize("name, write", [
    ("MODEL.BIN", lambda path: path.write_bytes(b"data")),
    ("weights.Pt", lambda path: path.write_bytes(b"data")),
    ("x.pkl.bak", lambda path: path.write_bytes(b"data")),
    ("state.dat", lambda path: path.write_bytes(b"\x80\x04\x95pickled")),
    ("checkpoint.data", _torch_pickle),
    ("embeddings.npy", _numpy_objects),
])
def test_pickles_are_found_by_any_case_extension_and_by_content(publish_folder, no_network, name, write):
    write(publish_folder / name)
    with pytest.raises(PublishError, match=rf"pickle-format files .*{name.replace('.', '[.]')}"):
        plan_upload(publish_folder)


def test_plain_numpy_arrays_are_not_taken_for_pickles(publish_folder):
    import numpy as np
    np.save(publish_folder / "centroids.npy", np.zeros((2, 3), dtype=np.float32))
    assert "centroids.npy" in {file.path for file in plan_upload(publish_folder)}


@pytest.mark.parametrize("repo_id", ["../x", "a/..", "org/../x", "a/.x", "a/b/c", "-a/b", "a--b/c", "a/b.", "/x",
                                     "a/" + "n" * 97, "a/b c"])
def test_repo_ids_the_hub_would_not_accept_are_refused(publish_folder, no_network, repo_id):
    with pytest.raises(PublishError, match="ORG/NAME"):
        publish(publish_folder, repo_id, dry_run=True)
    assert not (publish_folder / "README.md").exists()


@pytest.mark.parametrize("repo_id", ["my-org/commercemm-tiny", "user_1/model.v2", "A/b"])
def test_good_repo_ids_pass(publish_folder, no_network, repo_id):
    assert publish(publish_folder, repo_id, dry_run=True)["repo_id"] == repo_id


def _http_client_connect_errors() -> list:
    """huggingface_hub's own HTTP client's error for a refused connection (httpx2 in huggingface_hub 2.x)."""
    try:
        import httpx2
    except ImportError:
        return []
    return [httpx2.ConnectError("[Errno 111] Connection refused")]


@pytest.mark.parametrize("error", [
    huggingface_hub.errors.OfflineModeIsEnabled("offline mode is enabled"),
    ConnectionRefusedError(111, "Connection refused"),
    socket.gaierror(-3, "Temporary failure in name resolution"),
    *_http_client_connect_errors(),
])
def test_an_unreachable_hub_is_a_clear_error(publish_folder, monkeypatch, no_stored_token, error):
    def unreachable(self, repo_id, **kwargs):
        raise error

    monkeypatch.setattr(HfApi, "create_repo", unreachable)
    with pytest.raises(PublishError, match=r"Could not reach the Hugging Face Hub .*--dry-run"):
        publish(publish_folder, REPO, token=SECRET)
    monkeypatch.setenv("HF_TOKEN", SECRET)
    with pytest.raises(SystemExit, match=r"commercemm publish: Could not reach the Hugging Face Hub") as exit_info:
        main(["publish", str(publish_folder), "--repo-id", REPO])
    assert SECRET not in str(exit_info.value)

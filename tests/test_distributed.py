"""Pretraining under `torchrun --nproc_per_node=2` on CPU (gloo): the real launcher, two real processes."""


import pytest
import torch


def test_two_processes_train_in_step_with_the_same_depths_and_weights(ddp_results):
    output_dir, (rank0, rank1) = ddp_results
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["global_step"] == rank1["global_step"] == 4
    # modality randomization drew the same depths on both processes, and not always full depth
    assert rank0["depths"] == rank1["depths"] and len(rank0["depths"]) == 4
    assert any(value is not None for depths in rank0["depths"] for value in depths.values())
    assert rank0["replicas_equal"] and rank1["replicas_equal"]
    logged = rank0["logged"]
    assert logged and all(f"{task}_loss" in logged[0] for task in ("mlm", "itc", "omni_image_to_image"))
    # checkpoints written atomically by rank 0 while rank 1 waited
    assert sorted(p.name for p in output_dir.iterdir() if p.name.startswith("checkpoint-")) == ["checkpoint-2",
                                                                                                 "checkpoint-4"]
    assert not (output_dir / ".staging").exists()


def test_contrastive_gradients_across_processes_are_exact(ddp_results):
    _, results = ddp_results
    for result in results:
        assert result["gathered_loss"] == pytest.approx(result["reference_loss"], abs=1e-5)
        assert result["grad_matches"]
        assert result["grad_without_queries_matches"]


@pytest.mark.parametrize("engine", ["ddp", "fsdp", "deepspeed"])
def test_every_engine_steps_the_optimizer_and_scheduler_once_per_training_step(engine_runs, engine):
    results, _ = engine_runs[engine]
    assert results["world_size"] == 2 and results["global_step"] == 3
    assert results["scheduler_steps"] == 3
    if engine == "deepspeed":
        assert results["distributed_type"] == "DistributedType.DEEPSPEED"
        assert results["deepspeed_engine_steps"] == 3  # two backward calls per micro-step, one engine step per step
        assert results["torch_optimizer_steps"] == 3 * results["parameter_groups"]  # ZeRO: once per group
    else:
        assert results["torch_optimizer_steps"] == 3
    if engine == "fsdp":  # the model's _fsdp_plan: each of the 3 stacks' 2 blocks a shard unit, plus the root
        assert results["fsdp_units"] == 3 * 2 + 1
        # evaluation's direct calls of the embedding methods see whole parameters, not the resharded root's shards
        assert results["sharded_after_training"] and results["whole_inside_gathered"]
    assert len(results["logged"]) == 3


def test_ddp_synchronises_each_gradient_bucket_once_per_training_step(engine_runs):
    """The first pass of the synchronising micro-step runs under `no_sync`: one all-reduce per bucket and step."""
    results, _ = engine_runs["ddp"]
    assert results["bucket_syncs"] >= 3 and results["max_bucket_syncs_per_step"] == 1


@pytest.mark.parametrize("engine, tolerance", [("fsdp", 1e-5), ("deepspeed", 2e-3)])
def test_fsdp_and_deepspeed_train_like_ddp(engine_runs, engine, tolerance):
    """Same data, seeds, depths and masks: the same losses at every step, the same evaluation and weights. (DeepSpeed
    reduces gradients in its own order, and Adam amplifies the last bits of near-zero gradients to a fraction of a
    learning-rate step, hence its looser tolerance.)"""
    (reference, reference_weights), (results, weights) = engine_runs["ddp"], engine_runs[engine]
    for expected, got in zip(reference["logged"], results["logged"]):
        for name in ("loss", "mlm_loss", "itc_loss", "itm_loss", "mim_kl_loss", "omni_image_to_multimodal_loss"):
            assert got[name] == pytest.approx(expected[name], rel=tolerance, abs=tolerance), (engine, got["step"], name)
    assert results["eval"]["eval_query_to_product_recall@10"] == reference["eval"]["eval_query_to_product_recall@10"]
    assert results["eval"]["eval_loss"] == pytest.approx(reference["eval"]["eval_loss"], rel=10 * tolerance)
    assert sorted(weights) == sorted(reference_weights)
    for name, tensor in reference_weights.items():
        torch.testing.assert_close(weights[name], tensor, atol=tolerance, rtol=0, msg=f"{engine}: {name}")

"""Pretraining under `torchrun --nproc_per_node=2` on CPU (gloo): the real launcher, two real processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


SCRIPT = Path(__file__).parent / "scripts" / "ddp_pretraining.py"


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("ddp")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RANK", "WORLD_SIZE", "MASTER_"))}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
               str(output_dir)]
    result = subprocess.run(command, cwd=SCRIPT.parent.parent, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return output_dir, [json.loads((output_dir / f"results_{rank}.json").read_text()) for rank in (0, 1)]


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

"""`resources:` and `threads:` of the jobs that ask for more than the defaults.

Requests are not part of any slice, so editing them never reruns a job.
"""

from __future__ import annotations

from typing import Any

from medlatent.config.lookups import model_entry
from medlatent.core.errors import ConfigError

#: GPUs of a training stage that sets no `gpus:`.
TRAIN_GPUS = 1
#: Requests of a training stage that sets none (keys of a `stage1:` / `stage2:` block).
TRAIN_RESOURCES: dict[str, Any] = {"mem_mb": 32000, "runtime": 4320, "threads": 4}


def train_resources(config: dict, model_id: str, stage: str) -> dict:
    """`resources:` / `threads:` of a training job: gpu from the stage, the rest with defaults."""
    block = model_entry(config, model_id).get(stage, {})
    return {
        "gpu": block.get("gpus", TRAIN_GPUS),
        **{key: block.get(key, default) for key, default in TRAIN_RESOURCES.items()},
    }


def latents_gpus(config: dict) -> int:
    """GPUs of one extract_latents job (`latents.gpus`)."""
    return config["latents"]["gpus"]


def latents_threads(config: dict) -> int:
    """Threads of one extract_latents job: the encoder plus one per reader worker (`latents.workers`)."""
    return config["latents"]["workers"] + 1


def curate_threads(config: dict) -> int:
    """Processes of one curate_source job (`curate.threads`)."""
    return config["curate"]["threads"]


def decode_mem_mb(config: dict) -> int:
    """Memory (MB) of one process reading images (`curate.mem_mb`): a curation worker, a normalize_shard job."""
    return config["curate"]["mem_mb"]


def cad_train_resources(config: dict) -> dict:
    """gpu and threads of one cad_train job: `evaluation.cad.gpus`, and a thread per loader worker plus one."""
    cad = config["evaluation"]["cad"]
    return {"gpu": cad["gpus"], "threads": cad["num_workers"] + 1}


def recon_mem_mb(config: dict) -> int:
    """Memory of one recon_image_type job (`evaluation.recon.mem_mb`)."""
    return config["evaluation"]["recon"]["mem_mb"]


def evaluation_gpus(config: dict, job: str) -> int:
    """GPUs of the `recon` or `efficiency` jobs (`evaluation.<job>.gpus`)."""
    if job not in ("recon", "efficiency"):
        raise ConfigError(f"no GPU setting for evaluation job {job!r}; choose recon or efficiency")
    return config["evaluation"][job]["gpus"]

# Models: 2D stage 1 (autoencoder) -> 2D stage 2 (projection head); 3D stage 2 inflates the
# parent 2D model's stage 1. Models with `weights:` are imported instead of trained.
# Checkpoints for resuming live in results/checkpoints/{model}/{stage}/ (not outputs).
# Training reads shard lists, one per source and split, not the shards themselves: see the
# docstring of medlatent.train.shard_lists (why the DAG stays fast).


rule list_shards:
    """The shards of one source and split with their item counts and sha256: the training jobs' input."""
    input:
        get_split_shards,
    output:
        SHARD_LIST,
    log:
        "logs/shard_lists/{source}/{split}.log",
    benchmark:
        "benchmarks/shard_lists/{source}/{split}.tsv"
    conda:
        ENV
    shell:
        "medlatent list-shards --shards {input} --out {output} > {log} 2>&1"


rule train_stage1:
    """2D stage 1: L1 + LPIPS + KL + BiomedCLIP consistency + PatchGAN (LoRA on natural-image inits)."""
    input:
        train=get_training_shard_lists("train"),
        val=get_training_shard_lists("val"),
        manifests=get_training_manifests,
    output:
        weights=f"{RESULTS}/models/{{model}}/stage1.pt",
        losses=f"{RESULTS}/models/{{model}}/stage1_losses.csv",
        curve=f"{RESULTS}/models/{{model}}/stage1_losses.png",
    log:
        "logs/train/{model}/stage1.log",
    benchmark:
        "benchmarks/train/{model}/stage1.tsv"
    wildcard_constraints:
        model=MODELS_2D,
    conda:
        ENV
    threads: get_train_resource("stage1", "threads")
    resources:
        gpu=get_train_resource("stage1", "gpu"),
        mem_mb=get_train_resource("stage1", "mem_mb"),
        runtime=get_train_resource("stage1", "runtime"),
    params:
        spec=get_train_spec("stage1"),
        checkpoints=f"{RESULTS}/checkpoints/{{model}}/stage1",
    shell:
        "medlatent train-stage1 --spec {params.spec:q} --train-lists {input.train} --val-lists {input.val}"
        " --manifests {input.manifests} --out {output.weights} --losses {output.losses} --curve {output.curve}"
        " --checkpoints {params.checkpoints} --threads {threads} > {log} 2>&1"


rule train_stage2_2d:
    """Stage 2. 2D: encoder and decoder frozen, the projection head learns the embedding loss.
    3D (train_stage2_3d): inflate the parent 2D stage-1 autoencoder, train on 3D patches (LPIPS + GAN on slices)."""
    input:
        stage1=get_parent_stage1,
        train=get_training_shard_lists("train"),
        val=get_training_shard_lists("val"),
        manifests=get_training_manifests,
    output:
        weights=f"{RESULTS}/models/{{model}}/stage2.pt",
        card=f"{RESULTS}/models/{{model}}/card.json",
        losses=f"{RESULTS}/models/{{model}}/stage2_losses.csv",
        curve=f"{RESULTS}/models/{{model}}/stage2_losses.png",
    log:
        "logs/train/{model}/stage2.log",
    benchmark:
        "benchmarks/train/{model}/stage2.tsv"
    wildcard_constraints:
        model=MODELS_2D,
    conda:
        ENV
    threads: get_train_resource("stage2", "threads")
    resources:
        gpu=get_train_resource("stage2", "gpu"),
        mem_mb=get_train_resource("stage2", "mem_mb"),
        runtime=get_train_resource("stage2", "runtime"),
    params:
        command="train-stage2-2d",
        spec=get_train_spec("stage2"),
        checkpoints=f"{RESULTS}/checkpoints/{{model}}/stage2",
    shell:
        "medlatent {params.command} --spec {params.spec:q} --stage1 {input.stage1} --train-lists {input.train}"
        " --val-lists {input.val} --manifests {input.manifests} --out {output.weights} --card {output.card}"
        " --losses {output.losses} --curve {output.curve} --checkpoints {params.checkpoints} --threads {threads}"
        " > {log} 2>&1"


use rule train_stage2_2d as train_stage2_3d with:
    wildcard_constraints:
        model=MODELS_3D,
    params:
        command="train-stage2-3d",


rule demo_family_weights:
    """Demo runs: a tiny random diffusers AutoencoderKL (save_pretrained folder), imported below as demo weights."""
    output:
        weights=directory(mlconfig.demo_weights_path(config, "diffusers")),
    log:
        "logs/train/{model}/demo-weights.log",
    benchmark:
        "benchmarks/train/{model}/demo-weights.tsv"
    wildcard_constraints:
        model=DEMO_WEIGHTS_DIFFUSERS,
    conda:
        ENV
    params:
        spec=get_demo_weights_spec,
    shell:
        "medlatent demo-weights --spec {params.spec:q} --out {output.weights} > {log} 2>&1"


use rule demo_family_weights as demo_maisi_weights with:
    output:
        weights=mlconfig.demo_weights_path(config, "maisi"),
    wildcard_constraints:
        model=DEMO_WEIGHTS_MAISI,


rule import_weights:
    """A model with released `weights:` (LDM layout or medlatent-model/1): final weights + card, no training."""
    input:
        weights=get_imported_weights,
    output:
        weights=f"{RESULTS}/models/{{model}}/stage2.pt",
        card=f"{RESULTS}/models/{{model}}/card.json",
    log:
        "logs/train/{model}/import.log",
    benchmark:
        "benchmarks/train/{model}/import.tsv"
    wildcard_constraints:
        model=MODELS_IMPORTED,
    conda:
        ENV
    params:
        spec=get_import_spec,
    shell:
        "medlatent import-weights --spec {params.spec:q} --weights {input.weights} --out {output.weights}"
        " --card {output.card} > {log} 2>&1"

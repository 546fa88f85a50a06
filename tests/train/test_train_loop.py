"""The training loop end to end on tiny models and real shards: the loss falls, a killed run
resumes to identical weights, the discriminator never trains in eval mode, stage 2 touches
only the projection, LoRA touches only the adapters, and the six demo architectures give
latents of the published shapes through `load_model`."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import torch
from train_helpers import (
    CPU,
    TINY_2D,
    TINY_3D,
    make_config,
    make_data,
    make_job,
    one_thread,  # noqa: F401 (autouse fixture)
    train_spec,
)

from medlatent.core.errors import ConfigError, InputError
from medlatent.models import load_model
from medlatent.models.lora import TARGET_MODULES
from medlatent.models.projection import ProjectionHead
from medlatent.models.registry import create_autoencoder
from medlatent.models.serialize import load_autoencoder
from medlatent.train import recipes
from medlatent.train.losses import Stage1Loss
from medlatent.train.stages import AdversarialStage, ProjectionStage

LORA = {"rank": 2, "alpha": 2, "dropout": 0.1}
STAGE2 = {"steps": 2, "batch_size": 4, "lr": 1.0e-3}


def tiny(stage1: dict, **extra) -> dict:
    return {**TINY_2D, **extra, "stage1": {"batch_size": 4, "lr": 5.0e-4, **stage1}, "stage2": STAGE2}


@pytest.fixture(scope="module")
def data2d(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("data2d"), (32, 32))


def autoencoder_tensors(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["autoencoder"]


class Kill(Exception):
    pass


def kill_after(step: int):
    def hook(done: int, _row: dict) -> None:
        if done == step:
            raise Kill(f"killed after step {done}")

    return hook


def test_stage1_reconstruction_loss_falls_and_curves_are_written(tmp_path, data2d, capfd):
    config = make_config(tmp_path, [tiny({"steps": 6, "disc_start": 100})])
    outcome = recipes.train_stage1(make_job(tmp_path, train_spec(config, "tiny2d", "stage1"), data2d))
    rec = [row["rec_l1"] for row in outcome.history if row["split"] == "train"]
    assert len(rec) == 6 and sum(rec[-3:]) / 3 < 0.8 * rec[0]
    out = tmp_path / "results" / "models" / "tiny2d"
    lines = (out / "stage1_losses.csv").read_text().splitlines()
    assert lines[0].startswith("step,split,") and "rec_l1" in lines[0] and len(lines) == 1 + 6 + 1  # + final val
    assert (out / "stage1_losses.png").read_bytes()[:4] == b"\x89PNG"
    assert "6/6" in capfd.readouterr().err  # tqdm progress with ETA goes to the rule log
    assert not (tmp_path / "results" / "checkpoints" / "tiny2d" / "stage1").exists()


def test_killed_run_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path, data2d):
    # LoRA dropout, posterior sampling and the discriminator all draw random numbers
    config = make_config(
        tmp_path, [tiny({"steps": 4, "disc_start": 1, "checkpoint_every": 2, "perceptual_weight": 0}, lora=LORA)]
    )
    spec = train_spec(config, "tiny2d", "stage1")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    recipes.train_stage1(make_job(whole, spec, data2d))
    with pytest.raises(Kill):
        recipes.train_stage1(make_job(killed, spec, data2d, hooks=[kill_after(3)]))
    checkpoints = killed / "results" / "checkpoints" / "tiny2d" / "stage1"
    assert [p.name for p in checkpoints.iterdir()] == ["step-00000002.pt"]
    assert not (killed / "results" / "models" / "tiny2d" / "stage1.pt").exists()
    recipes.train_stage1(make_job(killed, spec, data2d))
    expected = autoencoder_tensors(whole / "results" / "models" / "tiny2d" / "stage1.pt")
    resumed = autoencoder_tensors(killed / "results" / "models" / "tiny2d" / "stage1.pt")
    assert expected.keys() == resumed.keys()
    assert all(torch.equal(expected[k], resumed[k]) for k in expected)
    csv = "results/models/tiny2d/stage1_losses.csv"
    assert (whole / csv).read_text() == (killed / csv).read_text()


def test_a_checkpoint_of_another_configuration_is_not_resumed(tmp_path, data2d):
    config = make_config(
        tmp_path, [tiny({"steps": 2, "disc_start": 100, "checkpoint_every": 1, "perceptual_weight": 0})]
    )
    spec = train_spec(config, "tiny2d", "stage1")
    with pytest.raises(Kill):
        recipes.train_stage1(make_job(tmp_path, spec, data2d, hooks=[kill_after(1)]))
    changed = train_spec(config, "tiny2d", "stage1", lr=1.0e-4)
    outcome = recipes.train_stage1(make_job(tmp_path, changed, data2d))
    assert [row["step"] for row in outcome.history if row["split"] == "train"] == [1, 2]


def test_discriminator_trains_in_train_mode_even_after_validation(tmp_path, data2d, monkeypatch):
    # checkpoint_every=1: a validation (discriminator in eval mode) after every step
    config = make_config(tmp_path, [tiny({"steps": 2, "disc_start": 0, "checkpoint_every": 1, "perceptual_weight": 0})])
    spec = train_spec(config, "tiny2d", "stage1")
    modes: list[tuple[bool, bool]] = []  # (training mode, forward that trains the discriminator)
    original = Stage1Loss.__init__

    def recording_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.discriminator.register_forward_pre_hook(
            lambda module, _: modes.append(
                (module.training, torch.is_grad_enabled() and next(module.parameters()).requires_grad)
            )
        )

    monkeypatch.setattr(Stage1Loss, "__init__", recording_init)
    recipes.train_stage1(make_job(tmp_path / "ok", spec, data2d))
    assert any(not training for training, _ in modes)  # validation scored in eval mode
    assert all(training for training, trains in modes if trains) and any(trains for _, trains in modes)

    # the public code's defect: once validation put it in eval mode, it stayed there
    monkeypatch.setattr(
        Stage1Loss,
        "set_discriminator_mode",
        lambda self, training: None if training else self.discriminator.train(False),
    )
    with pytest.raises(RuntimeError, match="eval mode"):
        recipes.train_stage1(make_job(tmp_path / "defect", spec, data2d))


def test_after_disc_start_even_steps_update_the_autoencoder_and_odd_steps_the_discriminator():
    torch.manual_seed(0)
    autoencoder = create_autoencoder(TINY_2D)
    loss = Stage1Loss(2, None, perceptual_weight=0.0, disc_start=3, disc_channels=8)
    stage = AdversarialStage(autoencoder, loss, lr=1e-3, precision="32", context=CPU)
    updates, forwards = [], []
    for name, optimizer in stage.optimizers.items():
        assert optimizer.defaults["betas"] == (0.5, 0.9)
        optimizer.register_step_post_hook(lambda *_, name=name: updates.append(name))
    autoencoder.register_forward_hook(lambda *_: forwards.append(torch.is_grad_enabled()))
    x = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for step in range(8):
        stage.micro_step(x, step, 1.0, synchronize=True)
        stage.optimizer_step(step)
    assert updates == ["generator"] * 3 + ["discriminator", "generator"] * 2 + ["discriminator"]
    assert updates.count("generator") == 5 and updates.count("discriminator") == 3
    # each discriminator step scores a fresh reconstruction made without a graph
    assert forwards == [True] * 3 + [False, True] * 2 + [False]
    projection = ProjectionStage(autoencoder, ProjectionHead(2, 1), torch.nn.Identity(), 1e-3, "32", CPU)
    assert projection.optimizer.defaults["betas"] == (0.5, 0.9)  # the public stage-2 script's Adam


def test_stage2_trains_only_the_projection_and_writes_the_card(tmp_path, data2d):
    config = make_config(tmp_path, [tiny({"steps": 2, "disc_start": 1, "perceptual_weight": 0})])
    manifest = tmp_path / "data" / "curated" / "src2d" / "manifest.parquet"
    manifest.parent.mkdir(parents=True)
    manifest.write_bytes(b"stand-in manifest bytes")
    recipes.train_stage1(make_job(tmp_path, train_spec(config, "tiny2d", "stage1"), data2d))
    stage1 = tmp_path / "results" / "models" / "tiny2d" / "stage1.pt"
    spec2 = train_spec(config, "tiny2d", "stage2")
    recipes.train_stage2_2d(make_job(tmp_path, spec2, data2d, parent=stage1, manifests=[manifest]))
    final = torch.load(tmp_path / "results" / "models" / "tiny2d" / "stage2.pt", weights_only=True)
    before = autoencoder_tensors(stage1)
    assert all(torch.equal(before[k], final["autoencoder"][k]) for k in before)
    torch.manual_seed(spec2["seed"])
    untrained = ProjectionHead(2, 1).state_dict()
    assert any(not torch.equal(untrained[k], final["projection"][k]) for k in untrained)
    assert final["format"] == "medlatent-model/1" and final["steps"] == 4 and final["demo"] is True
    card = json.loads((tmp_path / "results" / "models" / "tiny2d" / "card.json").read_text())
    assert card["weights"] == "demo" and any("random stand-in" in r for r in card["demo_reasons"])
    assert set(card["stages"]) == {"stage1", "stage2"}
    # stage 1 alternated (step 0 autoencoder, step 1 discriminator): the last value of each term
    assert {"nll", "g_adv", "d_loss"} <= set(card["stages"]["stage1"]["final_losses"]["train"])
    stage2 = card["stages"]["stage2"]
    assert stage2["config"] == spec2 and stage2["steps"] == 2 and "embed" in stage2["final_losses"]["train"]
    assert stage2["training_data"]["manifests_sha256"] == {
        "src2d": hashlib.sha256(b"stand-in manifest bytes").hexdigest()
    }
    assert card["code"]["package"] and "dirty" in card["code"] and stage2["device"]["type"] == "cpu"


def test_lora_trains_only_the_adapters_of_natural_image_weights(tmp_path, data2d):
    torch.manual_seed(7)
    natural = create_autoencoder(TINY_2D).state_dict()
    init_path = tmp_path / "weights" / "kl.ckpt"
    init_path.parent.mkdir()
    torch.save({"state_dict": {**natural, "loss.logvar": torch.zeros(())}}, init_path)
    model = tiny({"steps": 2, "disc_start": 1, "perceptual_weight": 0}, lora=LORA, init={"weights": str(init_path)})
    config = make_config(tmp_path, [model])
    recipes.train_stage1(make_job(tmp_path, train_spec(config, "tiny2d", "stage1"), data2d))
    trained, payload = load_autoencoder(tmp_path / "results" / "models" / "tiny2d" / "stage1.pt")
    state = trained.state_dict()
    adapted = {k for k in natural if k.endswith(".weight") and re.fullmatch(TARGET_MODULES, k.removesuffix(".weight"))}
    assert adapted and all(not torch.equal(state[k], natural[k]) for k in adapted)
    frozen = set(natural) - adapted
    assert all(torch.equal(state[k], natural[k]) for k in frozen)  # biases, norms, conv_in/out, resamplers
    assert not any("LoRA" in reason for reason in payload["record"]["demo_reasons"])  # a real base

    missing = tiny({"steps": 1}, lora=LORA, init={"weights": str(tmp_path / "absent.ckpt")})
    with pytest.raises(InputError, match="absent.ckpt"):
        recipes.build_stage1_autoencoder(missing, demo=True)
    with pytest.raises(ConfigError, match="only in the demo"):
        recipes.build_stage1_autoencoder(tiny({"steps": 1}, lora=LORA), demo=False)


def test_learning_rate_is_scaled_by_the_global_batch_for_the_adversarial_stages():
    assert recipes.effective_lr({"lr": 4.5e-6, "batch_size": 32, "lr_scaled_by_batch": True}) == pytest.approx(1.44e-4)
    assert recipes.effective_lr({"lr": 4.0e-4, "batch_size": 32, "lr_scaled_by_batch": False}) == 4.0e-4


def test_the_six_demo_models_train_and_load_with_the_published_latent_shapes(tmp_path):
    """Every demo architecture the workflow trains through its stages (1 step each); latents via load_model."""
    from train_helpers import DEMO_CONFIG, FULL_CONFIG

    from medlatent import config as mlconfig

    config = mlconfig.load(FULL_CONFIG, DEMO_CONFIG)
    shards = {2: make_data(tmp_path, (64, 64), n_train=4, n_val=0), 3: make_data(tmp_path, (32, 32, 32), 2, 0)}
    models = tmp_path / "results" / "models"
    fast = {"steps": 1, "perceptual_weight": 0, "disc_start": 1}  # shapes only: no LPIPS, no GAN step
    quick = {2: {**fast, "batch_size": 2}, 3: {**fast, "batch_size": 1, "patch": [24, 24, 24]}}
    trained = [mlconfig.model_entry(config, m) for dims in (2, 3) for m in mlconfig.trained_models(config, dims)]
    for model in trained:  # 2D first: the 3D models inflate their stage 1
        name, dims = model["id"], model["dims"]
        if dims == 2:
            recipes.train_stage1(make_job(tmp_path, train_spec(config, name, "stage1", **quick[2]), shards[2]))
            recipes.train_stage2_2d(
                make_job(
                    tmp_path,
                    train_spec(config, name, "stage2", **quick[2]),
                    shards[2],
                    parent=models / name / "stage1.pt",
                )
            )
        else:
            parent = models / model["inflate_from"] / "stage1.pt"
            recipes.train_stage2_3d(
                make_job(tmp_path, train_spec(config, name, "stage2", **quick[3]), shards[3], parent=parent)
            )
    shapes = {}
    for model in trained:
        medvae = load_model(models / model["id"] / "stage2.pt")
        assert medvae.is_demo and medvae.latent_channels == model["latent_channels"]
        side = round(model["f"] ** (1 / model["dims"]))  # H / sqrt(f) in 2D, / cbrt(f) in 3D
        x = torch.zeros(1, 1, *([64, 64] if model["dims"] == 2 else [32, 32, 32]))
        with torch.no_grad():
            shapes[model["id"]] = tuple(medvae.encode_latent(x).shape)
        assert medvae.downsample_factor == side
    assert shapes == {
        "demo_f16_c1": (1, 1, 16, 16),
        "demo_f16_c3": (1, 3, 16, 16),
        "demo_f64_c1": (1, 1, 8, 8),
        "demo_f64_c4": (1, 4, 8, 8),
        "demo3d_f64_c1": (1, 1, 8, 8, 8),
        "demo3d_f512_c1": (1, 1, 4, 4, 4),
    }


def test_a_3d_model_needs_the_architecture_of_its_parent(tmp_path, data2d):
    config = make_config(
        tmp_path,
        [
            tiny({"steps": 1, "perceptual_weight": 0}),
            {**TINY_3D, "ch": 16, "norm_groups": 4, "stage2": {"steps": 1, "batch_size": 1, "lr": 1e-4}},
        ],
    )
    recipes.train_stage1(make_job(tmp_path, train_spec(config, "tiny2d", "stage1"), data2d))
    shards3d = make_data(tmp_path, (24, 24, 24), 2, 0)
    with pytest.raises(ConfigError, match="architecture of its inflate_from model tiny2d"):
        recipes.train_stage2_3d(
            make_job(
                tmp_path,
                train_spec(config, "tiny3d", "stage2"),
                shards3d,
                parent=tmp_path / "results" / "models" / "tiny2d" / "stage1.pt",
            )
        )

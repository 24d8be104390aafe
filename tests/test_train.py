"""The training run: files, loss, optimiser groups, schedule, early stopping, resume."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from handseg.app.cli import main
from handseg.core.config import TrainConfig, resolve_config
from handseg.core.errors import HandsegError
from handseg.model.network import HandSegNet
from handseg.train.module import SegModule, build_optimizer, build_scheduler, param_groups
from handseg.train.run import train

TINY = {
    "image_size": (64, 80),
    "batch_size": 4,
    "backbone_weights": "none",
    "workers": 0,
    "device": "cpu",
}


def _cfg(synth_dir: Path, out: Path, **kw) -> TrainConfig:
    values = TINY | {"images": str(synth_dir / "images"), "masks": str(synth_dir / "masks")}
    return resolve_config(values | {"out": str(out)} | kw)


def _rows(run: Path) -> list[dict[str, str]]:
    with open(run / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def two_epoch_run(synth_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "r"
    # no augmentation: two epochs on ten tiny photos are too few for the loss to fall
    # through the scratch preset's scale-rotate + colour noise (it did not, on torch 2.14)
    cfg = _cfg(
        synth_dir,
        out,
        preset="scratch",
        epochs=2,
        batch_size=2,
        class_weighting="median-frequency",
        augment=("none",),
    )
    return train(cfg, progress=False)


def test_run_directory_holds_every_file(two_epoch_run):
    run = two_epoch_run
    for name in (
        "config.yaml",
        "split.json",
        "model.pt",
        "metrics.csv",
        "training-progress.png",
        "checkpoints/last.ckpt",
        "test/metrics.json",
        "test/per-image.csv",
        "test/confusion.png",
    ):
        assert (run / name).is_file(), name
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["preset"] == "scratch" and cfg["backbone_weights_used"] == "none"
    assert len(cfg["class_weights"]) == 2


def test_model_file_rebuilds_the_presets_light_network(two_epoch_run):
    """The scratch preset's architecture options reach the model file, which rebuilds it."""
    from handseg.model.checkpoint import read_model_file

    net, meta = read_model_file(two_epoch_run / "model.pt")
    assert (net.cfg.output_stride, net.cfg.decoder_channels) == (32, 64)
    assert net.cfg.aspp_rates == (3, 6, 9)
    assert net.classifier.in_channels == 64
    with torch.no_grad():
        assert net.eval()(torch.zeros(1, 3, 50, 70)).shape == (1, 2, 50, 70)


def test_architecture_flags_override_the_preset(tmp_path):
    cfg = resolve_config({"preset": "scratch", "output_stride": 16, "decoder_channels": 256})
    assert (cfg.output_stride, cfg.decoder_channels) == (16, 256)
    assert resolve_config({}).output_stride == 16  # seed = MATLAB's layout
    with pytest.raises(HandsegError, match="output_stride"):
        resolve_config({"output_stride": 4})


def test_loss_falls_over_two_epochs(two_epoch_run):
    rows = _rows(two_epoch_run)
    train_rows = [r for r in rows if r["train_loss"]]
    val_rows = [r for r in rows if r["val_loss"]]
    assert [int(r["epoch"]) for r in val_rows] == [1, 2]
    epoch1 = [float(r["train_loss"]) for r in train_rows if r["epoch"] == "1"]
    epoch2 = [float(r["train_loss"]) for r in train_rows if r["epoch"] == "2"]
    assert np.mean(epoch2) < np.mean(epoch1)
    steps = [int(r["step"]) for r in train_rows]
    assert steps == list(range(1, len(steps) + 1))  # one row per iteration, 1-based


def test_model_file_is_self_describing_and_reloads_identically(two_epoch_run):
    import handseg

    obj = torch.load(two_epoch_run / "model.pt", weights_only=True)
    assert obj["classes"] == ["background", "hand"]
    assert obj["input_size"] == [64, 80]
    assert obj["normalization"]["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert obj["model"]["aspp_rates"] == [3, 6, 9]  # the scratch preset: stride 32
    assert obj["model"]["output_stride"] == 32 and obj["model"]["decoder_channels"] == 64
    assert "torch" in obj["versions"] and "train_config" in obj
    assert 0 <= obj["metrics"]["test"]["hand_IoU"] <= 1
    image = (np.random.default_rng(0).random((70, 90, 3)) * 255).astype(np.uint8)
    a = handseg.load_model(two_epoch_run / "model.pt").predict(image)
    b = handseg.load_model(two_epoch_run / "model.pt").predict(image)
    assert a.shape == (70, 90) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    # the stored weights are the best-validation checkpoint's
    best = torch.load(two_epoch_run / "checkpoints" / "best.ckpt", weights_only=True)
    key = "decoder.fuse.0.0.weight"
    torch.testing.assert_close(obj["state_dict"][key], best["state_dict"][f"net.{key}"])


def test_param_groups_no_l2_on_biases_and_head_lr_x10():
    cfg = TrainConfig()  # seed preset
    net = HandSegNet()
    groups = {g["name"]: g for g in param_groups(net, cfg)}
    assert groups["backbone-decay"]["lr"] == pytest.approx(1e-3)
    assert groups["head-decay"]["lr"] == pytest.approx(1e-2)
    assert groups["head-no_decay"]["weight_decay"] == 0.0
    assert groups["backbone-decay"]["weight_decay"] == pytest.approx(0.005)
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    assert id(net.classifier.bias) in ids["head-no_decay"]
    assert id(net.classifier.weight) in ids["head-decay"]
    bn = net.encoder.bn1
    assert {id(bn.weight), id(bn.bias)} <= ids["backbone-decay"]  # BN scale and offset: L2
    assert id(net.decoder.project[1].bias) in ids["head-decay"]
    n_params = sum(len(g["params"]) for g in groups.values())
    assert n_params == len(list(net.parameters()))
    opt = build_optimizer(net, cfg)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9


def test_piecewise_schedule_drops_by_0_3_every_10_epochs():
    cfg = TrainConfig()
    opt = build_optimizer(HandSegNet(), cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=3)["scheduler"]
    lrs = []
    for _ in range(21):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[9] == pytest.approx(1e-3)
    assert lrs[10] == pytest.approx(3e-4)
    assert lrs[20] == pytest.approx(9e-5)


def test_early_stopping_after_four_validations_without_improvement(
    synth_dir, tmp_path, monkeypatch
):
    losses = iter([1.0, 0.5, 0.6, 0.5, 0.7, 0.55, 0.1, 0.1, 0.1, 0.1])

    def fake_val_end(self):
        self.log("val_loss", torch.tensor(next(losses)))
        self.log("val_acc", torch.tensor(0.5))

    monkeypatch.setattr(SegModule, "on_validation_epoch_end", fake_val_end)
    cfg = _cfg(synth_dir, tmp_path / "es", epochs=10, evaluate_test=False, max_steps=-1)
    run = train(cfg, progress=False)
    val = [r for r in _rows(run) if r["val_loss"]]
    # best at epoch 2 (0.5), then 0.6, 0.5 (not lower), 0.7, 0.55: four checks -> stop
    assert len(val) == 6
    meta = torch.load(run / "model.pt", weights_only=True)["metrics"]
    assert meta["best_val_loss"] == pytest.approx(0.5)
    assert meta["stopped_early"] is True


def test_resume_continues_from_the_last_checkpoint(synth_dir, tmp_path):
    out = tmp_path / "res"
    args = [
        "train",
        "--images",
        str(synth_dir / "images"),
        "--masks",
        str(synth_dir / "masks"),
        "--out",
        str(out),
        "--image-size",
        "64",
        "80",
        "--batch-size",
        "4",
        "--backbone-weights",
        "none",
        "--workers",
        "0",
        "--device",
        "cpu",
        "--no-test",
    ]
    assert main(args + ["--epochs", "1"]) == 0
    first = _rows(out)
    assert main(["train", "--resume", str(out), "--epochs", "2"]) == 0
    rows = _rows(out)
    assert rows[: len(first)] == first  # history kept, not restarted
    assert {r["epoch"] for r in rows if r["val_loss"]} == {"1", "2"}
    steps = [int(r["step"]) for r in rows if r["train_loss"]]
    assert steps == list(range(1, len(steps) + 1))


def test_bad_runs_fail_before_training(synth_dir, tmp_path, capsys):
    with pytest.raises(HandsegError, match="cannot resume"):
        train(_cfg(synth_dir, tmp_path / "none"), resume=True)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(HandsegError, match="cannot write to the output folder"):
        train(_cfg(synth_dir, blocker / "run"))
    code = main(
        [
            "train",
            "--images",
            str(tmp_path / "missing"),
            "--masks",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_too_few_images_for_the_split(tmp_path, synth_dir):
    import shutil

    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
        for p in sorted((synth_dir / sub).iterdir())[:2]:
            shutil.copy(p, tmp_path / sub / p.name)
    cfg = resolve_config(
        TINY
        | {
            "images": str(tmp_path / "images"),
            "masks": str(tmp_path / "masks"),
            "out": str(tmp_path / "o"),
        }
    )
    with pytest.raises(HandsegError, match="are needed"):
        train(cfg, progress=False)


def test_config_file_and_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: scratch\nepochs: 7\nimage-size: [96, 128]\naugment: [seed, color]\n")
    cfg = resolve_config({"epochs": 3}, f)
    assert cfg.preset == "scratch" and cfg.optimizer == "adamw"  # from the preset
    assert cfg.epochs == 3  # flag beats file
    assert cfg.image_size == (96, 128) and cfg.augment == ("seed", "color")
    f.write_text("epochs: 2\nlearning_rate: 1\n")
    with pytest.raises(HandsegError, match="unknown option"):
        resolve_config({}, f)
    f.write_text("!!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(HandsegError, match="not valid YAML"):
        resolve_config({}, f)


def test_dice_loss_option_adds_the_soft_dice_term(tmp_path):
    """--loss ce+dice trains on cross-entropy + soft Dice; validation stays cross-entropy."""
    import torch.nn.functional as F

    cfg = resolve_config(TINY | {"preset": "scratch", "loss": "ce+dice", "out": str(tmp_path)})
    module = SegModule(cfg, None)
    module.log = lambda *a, **k: None  # no trainer attached
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    y = torch.zeros(2, 32, 32, dtype=torch.long)
    y[:, 8:20, 10:24] = 1
    y[:, :, :2] = 255  # ignored pixels count in neither term
    module.eval()  # deterministic: no dropout, fixed batch-norm statistics
    loss = module.training_step((x, y), 0)
    with torch.no_grad():
        logits = module(x).float()
    ce = F.cross_entropy(logits, y, ignore_index=255)
    valid = y != 255
    p = logits.softmax(1)
    onehot = torch.stack([(y == 0) & valid, (y == 1) & valid], 1).float()
    pv = p * valid[:, None]
    inter, card = (pv * onehot).sum((0, 2, 3)), (pv + onehot).sum((0, 2, 3))
    dice = (1 - 2 * inter / card.clamp(min=1e-7)).mean()
    assert loss.item() == pytest.approx((ce + dice).item(), rel=1e-4)
    assert loss.item() > ce.item() + 0.1  # the Dice term is really there
    plain = SegModule(resolve_config(TINY | {"out": str(tmp_path)}), None)
    assert plain.dice is None and resolve_config({}).loss == "ce"  # MATLAB's default
    with pytest.raises(HandsegError, match="loss must be ce or ce\\+dice"):
        resolve_config({"loss": "focal"})


def test_robust_preset_is_scratch_with_background_compositing():
    from handseg.core.constants import FAMILIES
    from handseg.synth.compositing import BackgroundComposite, build_transform
    from handseg.train.run import augment_options as _augment_options

    scratch, robust = resolve_config({"preset": "scratch"}), resolve_config({"preset": "robust"})
    assert (robust.output_stride, robust.optimizer, robust.class_weighting) == (
        scratch.output_stride,
        scratch.optimizer,
        scratch.class_weighting,
    )
    assert robust.epochs == 3 * scratch.epochs
    assert robust.augment.index("background") < robust.augment.index("color")
    t = build_transform(list(robust.augment), **_augment_options(robust))
    (bg,) = [s for s in t.transforms if isinstance(s, BackgroundComposite)]
    assert (bg.p, bg.camouflage_prob, bg.source.families) == (0.7, 0.3, FAMILIES)
    assert resolve_config({"preset": "robust", "background_prob": 0.2}).background_prob == 0.2


def test_ema_saves_the_moving_average_not_the_last_weights(synth_dir, tmp_path):
    def weights(run: Path) -> dict[str, torch.Tensor]:
        state = torch.load(run / "model.pt", weights_only=True)["state_dict"]
        return {k: v.float() for k, v in state.items() if v.is_floating_point()}

    def dist(a, b) -> float:
        return sum(float((a[k] - b[k]).pow(2).sum()) for k in a) ** 0.5

    common = {"preset": "scratch", "augment": ("none",), "evaluate_test": False, "lr": 1e-2}
    first = weights(train(_cfg(synth_dir, tmp_path / "a", epochs=1, max_steps=1, **common),
                          progress=False))  # fmt: skip
    plain = weights(train(_cfg(synth_dir, tmp_path / "b", epochs=2, **common), progress=False))
    # a decay of nearly 1: the average stays at its first value, the weights after step 1
    ema = weights(train(_cfg(synth_dir, tmp_path / "c", epochs=2, ema_decay=0.999999, **common),
                        progress=False))  # fmt: skip
    assert dist(plain, first) > 0
    assert dist(ema, first) < 0.01 * dist(plain, first)
    with pytest.raises(HandsegError, match="ema_decay"):
        resolve_config({"ema_decay": 1.0})

"""Untrusted files: reading a model, checkpoint or config file never runs code from it.

Each crafted file carries a payload that would create a marker file when unpickled (or
constructed by an unsafe YAML loader). Every way handseg reads such a file must refuse it
with a clear one-line error, and the marker must not exist afterwards.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
from pathlib import Path

import pytest
import torch
import yaml

import handseg
from handseg.app.cli import main
from handseg.core.config import TrainConfig, resolve_config, save_config
from handseg.core.errors import HandsegError
from handseg.model.checkpoint import save_model_file
from handseg.model.network import HandSegNet, resolve_backbone_weights


class _Payload:
    """Unpickling this calls ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _ExecPayload:
    """Unpickling this calls ``exec`` on Python source that writes the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def _touch(marker: Path) -> str:
    return f"touch '{marker}'"


def _crafted_files(folder: Path, marker: Path) -> dict[str, Path]:
    """Model-like files whose unpickling would create ``marker``, in several wrappings."""
    folder.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    # 1. torch.save zip archive: a handseg-looking dict with the payload inside
    files["torch.save dict"] = folder / "model.pt"
    torch.save({"format": "handseg-model", "format_version": 1, "x": _Payload(_touch(marker))},
               files["torch.save dict"])  # fmt: skip
    # 2. the payload hidden in a state dict next to real tensors
    sd = HandSegNet().state_dict()
    sd["encoder.conv1.weight"] = _Payload(_touch(marker))
    files["payload inside state_dict"] = folder / "state.pt"
    torch.save({"state_dict": sd}, files["payload inside state_dict"])
    # 3. legacy (non-zip) torch serialisation
    files["legacy torch.save"] = folder / "legacy.pt"
    torch.save(_Payload(_touch(marker)), files["legacy torch.save"],
               _use_new_zipfile_serialization=False)  # fmt: skip
    # 4. a raw pickle, protocol 2 and 5
    for proto in (2, 5):
        p = folder / f"raw{proto}.pt"
        p.write_bytes(pickle.dumps(_Payload(_touch(marker)), protocol=proto))
        files[f"raw pickle protocol {proto}"] = p
    # 5. exec instead of os.system
    files["exec payload"] = folder / "exec.pt"
    torch.save({"format": "handseg-model", "x": _ExecPayload(marker)}, files["exec payload"])
    return files


@pytest.fixture
def marker(tmp_path) -> Path:
    path = tmp_path / "PWNED"
    yield path
    assert not path.exists(), "a crafted file ran code"


@pytest.fixture
def crafted(tmp_path, marker) -> dict[str, Path]:
    files = _crafted_files(tmp_path / "crafted", marker)
    # the payloads really work: plain pickle.load would run them
    with open(files["raw pickle protocol 2"], "rb") as f:
        pickle.load(f)  # noqa: S301 - deliberate, to prove the payload is live
    assert marker.exists()
    marker.unlink()
    return files


def _cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def _assert_one_error_line(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def test_load_model_refuses_every_crafted_file(crafted, marker):
    for name, path in crafted.items():
        with pytest.raises(HandsegError) as info:
            handseg.load_model(path)
        assert str(path) in str(info.value), name
        assert "\n" not in str(info.value)
        assert not marker.exists(), name


def test_payload_files_are_refused_as_code_not_as_corrupt(crafted):
    """The message says why: the file holds objects that would run code."""
    with pytest.raises(HandsegError, match="would run code"):
        handseg.load_model(crafted["torch.save dict"])


def test_a_run_folder_with_a_crafted_model(tmp_path, crafted, marker):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(crafted["torch.save dict"].read_bytes())
    with pytest.raises(HandsegError):
        handseg.load_model(run)


@pytest.mark.parametrize("command", ["predict", "evaluate", "export", "serve"])
def test_cli_refuses_crafted_models(command, tmp_path, crafted, marker):
    from PIL import Image

    (tmp_path / "im").mkdir()
    (tmp_path / "mk").mkdir()
    Image.new("RGB", (40, 32), (200, 150, 120)).save(tmp_path / "im" / "a.png")
    Image.new("L", (40, 32), 255).save(tmp_path / "mk" / "a.png")
    for name, path in crafted.items():
        argv = {
            "predict": ["predict", str(tmp_path / "im"), "--model", str(path), "--out",
                        str(tmp_path / "out"), "--device", "cpu"],
            "evaluate": ["evaluate", "--model", str(path), "--images", str(tmp_path / "im"),
                         "--masks", str(tmp_path / "mk"), "--device", "cpu"],
            "export": ["export", "--model", str(path), "--out", str(tmp_path / "m.onnx")],
            "serve": ["serve", "--model", str(path), "--port", "0", "--device", "cpu"],
        }[command]  # fmt: skip
        line = _assert_one_error_line(*_cli(argv))
        assert str(path) in line, name
        assert not marker.exists(), name
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_onnx_named_pickle_is_refused(tmp_path, crafted, marker):
    path = tmp_path / "model.onnx"
    path.write_bytes(crafted["raw pickle protocol 5"].read_bytes())
    with pytest.raises(HandsegError, match="not an ONNX model"):
        handseg.load_model(path)


def test_backbone_weights_refuse_crafted_files(crafted, marker):
    net = HandSegNet()
    before = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    for name, path in crafted.items():
        with pytest.raises(HandsegError) as info:
            resolve_backbone_weights(net, str(path))
        assert str(path) in str(info.value), name
        assert not marker.exists(), name
    after = net.encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing half-loaded


def test_genuine_files_still_load(tmp_path):
    """The refusals above are not a loader that refuses everything."""
    path = tmp_path / "model.pt"
    save_model_file(path, HandSegNet(), classes=("background", "hand"),
                    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                    input_size=(32, 48))  # fmt: skip
    assert handseg.load_model(path).input_size == (32, 48)
    sd = tmp_path / "encoder.pt"
    torch.save(HandSegNet().encoder.state_dict(), sd)
    assert resolve_backbone_weights(HandSegNet(), str(sd)) == str(sd)


# --- YAML --------------------------------------------------------------------------------------

_YAML_PAYLOADS = [
    "!!python/object/apply:os.system ['touch {m}']\n",
    "epochs: !!python/object/apply:os.system ['touch {m}']\n",
    "lr: !!python/object/new:subprocess.Popen [['touch', '{m}']]\n",
    "!!python/object/apply:builtins.exec [\"open('{m}', 'w').write('x')\"]\n",
    "augment: !!python/name:os.system\n",
]


@pytest.mark.parametrize("payload", _YAML_PAYLOADS)
def test_config_files_are_parsed_safely(payload, tmp_path, marker):
    cfg = tmp_path / "evil.yaml"
    cfg.write_text(payload.format(m=marker))
    with pytest.raises(yaml.constructor.ConstructorError):  # the payload is live YAML ...
        yaml.safe_load(cfg.read_text())
    with pytest.raises(HandsegError, match="not valid YAML"):  # ... that handseg refuses
        resolve_config({}, cfg)
    line = _assert_one_error_line(*_cli(["train", "--config", str(cfg), "--out",
                                         str(tmp_path / "run")]))  # fmt: skip
    assert str(cfg) in line
    assert not marker.exists()


def test_crafted_config_yaml_in_a_run_folder(tmp_path, marker):
    """``--resume RUN`` and ``evaluate --run RUN`` read RUN/config.yaml."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(_YAML_PAYLOADS[0].format(m=marker))
    _assert_one_error_line(*_cli(["train", "--resume", str(run)]))
    assert not marker.exists()
    from handseg.app.cli import run_hand_value as _run_hand_value

    assert _run_hand_value(run) is None  # evaluate --run: the unsafe file is ignored


# --- Lightning checkpoints given to --resume ---------------------------------------------------


def _run_folder_with_crafted_checkpoint(tmp_path: Path, marker: Path) -> Path:
    """A run folder ready for ``--resume`` whose last.ckpt carries the payload."""
    from PIL import Image

    from handseg.data.pairs import find_pairs
    from handseg.data.split import make_split, save_split

    for sub in ("images", "masks"):
        (tmp_path / sub).mkdir()
    for i in range(5):
        Image.new("RGB", (48, 32), (40 * i, 90, 120)).save(tmp_path / "images" / f"{i}.png")
        mask = Image.new("L", (48, 32), 0)
        mask.paste(255, (10, 8, 30, 24))
        mask.save(tmp_path / "masks" / f"{i}.png")
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    cfg = TrainConfig(images=str(tmp_path / "images"), masks=str(tmp_path / "masks"),
                      image_size=(32, 48), batch_size=2, epochs=2, backbone_weights="none",
                      workers=0, device="cpu", precision="32", out=str(run),
                      split_fractions=(0.6, 0.2, 0.2))  # fmt: skip
    save_config(cfg, run / "config.yaml")
    pairs = find_pairs(cfg.images, cfg.masks)
    save_split(make_split(pairs, cfg.split_fractions, 0), run / "split.json",
               images_dir=cfg.images, masks_dir=cfg.masks)  # fmt: skip
    torch.save({"epoch": 0, "global_step": 1, "x": _Payload(_touch(marker))},
               run / "checkpoints" / "last.ckpt")  # fmt: skip
    return run


def _resume(run: Path) -> tuple[int | None, str, BaseException | None]:
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["train", "--resume", str(run)])
    except Exception as exc:  # noqa: BLE001 - reported by the caller
        return None, err.getvalue(), exc
    return code, err.getvalue(), None


def test_crafted_resume_checkpoint_runs_no_code(tmp_path, marker):
    """With this torch (>= 2.6, which unpickles weights-only unless told otherwise), the
    payload in a crafted ``last.ckpt`` does not run."""
    run = _run_folder_with_crafted_checkpoint(tmp_path, marker)
    _resume(run)
    assert not marker.exists()


def test_crafted_resume_checkpoint_is_refused_cleanly_whatever_torch_defaults_to(
    tmp_path, monkeypatch
):
    """Even where torch would unpickle everything (torch < 2.6, or
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1), ``--resume`` checks the checkpoint weights-only
    first: one error line, no traceback, nothing runs."""
    marker = tmp_path / "PWNED"
    run = _run_folder_with_crafted_checkpoint(tmp_path, marker)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch < 2.6 behaviour
    code, err, exc = _resume(run)
    ran = marker.exists()
    marker.unlink(missing_ok=True)
    assert not ran, "the crafted checkpoint ran code during --resume"
    assert exc is None, f"{type(exc).__name__} escaped: {str(exc)[:200]}"
    _assert_one_error_line(code, err)

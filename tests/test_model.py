"""The network: MATLAB layout, any input size, backbone weights from local files."""

from __future__ import annotations

import logging
import socket

import pytest
import torch
import torchvision

from handseg.core.errors import HandsegError
from handseg.model.network import (
    HandSegNet,
    ModelConfig,
    model_config,
    resolve_backbone_weights,
)


@pytest.fixture(scope="module")
def net() -> HandSegNet:
    torch.manual_seed(0)
    return HandSegNet().eval()


@pytest.mark.parametrize("hw", [(64, 80), (101, 77), (33, 17)])
def test_any_input_size_gives_logits_of_that_size(net, hw):
    with torch.no_grad():
        y = net(torch.randn(2, 3, *hw))
    assert y.shape == (2, 2, *hw)
    assert torch.isfinite(y).all()


def test_matlab_layout():
    net = HandSegNet()
    # ASPP: 1x1 + three 3x3 branches at 6/12/18, 256 channels, no pooling branch
    branches = net.decoder.aspp.branches
    assert len(branches) == 4
    assert branches[0][0].kernel_size == (1, 1)
    assert [b[0].dilation for b in branches[1:]] == [(6, 6), (12, 12), (18, 18)]
    assert all(b[0].out_channels == 256 for b in branches)
    assert net.decoder.lowlevel[0].out_channels == 48
    assert [m[0].kernel_size for m in net.decoder.fuse] == [(3, 3), (3, 3)]
    # output stride 16: the last stage is dilated instead of strided
    with torch.no_grad():
        feats = net.encoder(torch.zeros(1, 3, 64, 96))
    assert feats[-1].shape[-2:] == (4, 6)
    assert feats[2].shape[-2:] == (16, 24)  # low-level features at stride 4


def test_gradients_reach_every_parameter():
    net = HandSegNet().train()
    y = net(torch.randn(2, 3, 48, 64))
    y.sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert missing == []


@pytest.mark.parametrize("stride", [8, 32])
def test_other_output_strides_any_size_and_scaled_rates(stride):
    torch.manual_seed(0)
    net = HandSegNet(model_config(2, output_stride=stride, decoder_channels=16)).eval()
    rates = [b[0].dilation[0] for b in net.decoder.aspp.branches[1:]]
    assert rates == [r * 16 // stride for r in (6, 12, 18)]
    assert all(b[0].out_channels == 16 for b in net.decoder.aspp.branches)
    assert net.decoder.fuse[-1][0].out_channels == 16
    with torch.no_grad():
        feats = net.encoder(torch.zeros(1, 3, 64, 96))
        y = net(torch.randn(1, 3, 50, 70))  # not a multiple of the stride: padded inside
    assert feats[-1].shape[-2:] == (64 // stride, 96 // stride)
    assert y.shape == (1, 2, 50, 70) and torch.isfinite(y).all()


def test_bad_architecture_options_are_clear_errors():
    with pytest.raises(HandsegError, match="output stride"):
        model_config(2, output_stride=4)
    with pytest.raises(HandsegError, match="decoder channels"):
        model_config(2, decoder_channels=2)


def test_config_round_trip():
    cfg = ModelConfig(num_classes=3, aspp_rates=(3, 6, 9), output_stride=32)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    # model files written before output_stride existed read as MATLAB's stride 16
    old = {k: v for k, v in cfg.to_dict().items() if k != "output_stride"}
    assert ModelConfig.from_dict(old).output_stride == 16


def _tv_state_dict(seed: int = 1) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()


def test_backbone_weights_from_local_torchvision_file(tmp_path):
    sd = _tv_state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(sd, path)
    net = HandSegNet()
    used = resolve_backbone_weights(net, str(path))
    assert used == str(path)
    enc = net.encoder.state_dict()
    for k in ("conv1.weight", "layer4.1.bn2.running_var", "layer3.0.downsample.0.weight"):
        torch.testing.assert_close(enc[k], sd[k])


def test_backbone_weights_from_encoder_state_dict(tmp_path):
    src = HandSegNet()
    path = tmp_path / "encoder.pt"
    torch.save({f"encoder.{k}": v for k, v in src.encoder.state_dict().items()}, path)
    net = HandSegNet()
    resolve_backbone_weights(net, str(path))
    torch.testing.assert_close(net.encoder.conv1.weight, src.encoder.conv1.weight)


def test_backbone_weights_mismatch_is_a_clear_error(tmp_path):
    path = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), path)
    with pytest.raises(HandsegError, match="do not fit a ResNet-18"):
        resolve_backbone_weights(HandSegNet(), str(path))
    with pytest.raises(HandsegError, match="no such file"):
        resolve_backbone_weights(HandSegNet(), str(tmp_path / "absent.pth"))


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty torch hub cache and no network at all."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def refuse(*args, **kwargs):
        raise OSError("network is unreachable (test)")

    monkeypatch.setattr(socket, "create_connection", refuse)
    return tmp_path / "hub"


def test_auto_falls_back_to_random_init_without_network(offline, caplog):
    net = HandSegNet()
    before = net.encoder.conv1.weight.clone()
    with caplog.at_level(logging.WARNING):
        used = resolve_backbone_weights(net, "auto", timeout=0.5)
    assert used == "none"
    assert "RANDOM" in caplog.text
    torch.testing.assert_close(net.encoder.conv1.weight, before)


def test_imagenet_without_network_says_how_to_supply_a_file(offline):
    with pytest.raises(HandsegError, match="--backbone-weights /path/to/resnet18.pth"):
        resolve_backbone_weights(HandSegNet(), "imagenet", timeout=0.5)


def test_imagenet_weights_come_from_the_local_cache(offline):
    sd = _tv_state_dict(seed=3)
    (offline / "checkpoints").mkdir(parents=True)
    torch.save(sd, offline / "checkpoints" / "resnet18-f37072fd.pth")
    net = HandSegNet()
    assert resolve_backbone_weights(net, "auto") == "imagenet"
    torch.testing.assert_close(net.encoder.layer1[0].conv1.weight, sd["layer1.0.conv1.weight"])

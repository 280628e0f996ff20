import math

import pytest
import torch
import torch.nn as nn

from lib.models.backbones import BACKBONES, OptionAShortcut, build_backbone
from lib.models.heads import HEADS, build_head
from lib.models.posthoc import tau_normalize_
from lib.models.pretrained import load_pretrained, load_state_dict_file
from lib.utils.errors import UserError

# name -> (input side, pooled dim, stage names); resnext50 at 32 px (grouped convs are slow on CPU)
SPECS = {
    "res32_cifar": (32, 64, ("stem", "layer1", "layer2", "layer3")),
    "res34_cifar": (32, 512, ("stem", "layer1", "layer2", "layer3", "layer4")),
    "res10": (64, 512, ("stem", "layer1", "layer2", "layer3", "layer4")),
    "res50": (64, 2048, ("stem", "layer1", "layer2", "layer3", "layer4")),
    "resnext50": (32, 2048, ("stem", "layer1", "layer2", "layer3", "layer4")),
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.mark.parametrize("name", sorted(SPECS))
def test_backbone_forward_gives_pooled_feature_of_out_dim(name):
    side, dim, stages = SPECS[name]
    net = BACKBONES.get(name)().eval()
    assert net.out_dim == dim and net.stage_names == stages
    assert net.stage_channels[stages[-1]] == dim
    with torch.no_grad():
        assert net(torch.randn(2, 3, side, side)).shape == (2, dim)


def test_res152_forward_gives_2048_feature():
    net = BACKBONES.get("res152")().eval()
    assert net.out_dim == 2048 and net.stage_channels["layer3"] == 1024
    with torch.no_grad():
        assert net(torch.randn(1, 3, 32, 32)).shape == (1, 2048)


@pytest.mark.parametrize("name", ["res32_cifar", "res10"])
def test_backbone_accepts_one_input_channel(name):
    side, dim, _ = SPECS[name]
    net = build_backbone(name, in_channels=1).eval()
    assert net.stem.conv1.in_channels == 1
    with torch.no_grad():
        assert net(torch.randn(2, 1, side, side)).shape == (2, dim)


def test_res32_cifar_has_0_46m_parameters_and_cifar_spatial_sizes():
    net = BACKBONES.get("res32_cifar")().eval()
    n = sum(p.numel() for p in net.parameters())
    assert n == 463504  # 464,154 with the Linear(64, 10) head of He et al.
    assert 450_000 <= n <= 480_000
    with torch.no_grad():
        maps = net.forward_stages(torch.randn(1, 3, 32, 32))
    assert [tuple(m.shape[1:]) for m in maps.values()] == [(16, 32, 32), (16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert [len(getattr(net, f"layer{i}")) for i in (1, 2, 3)] == [5, 5, 5]


def test_option_a_shortcut_is_parameter_free_subsample_and_zero_pad():
    net = BACKBONES.get("res32_cifar")()
    shortcuts = [b.shortcut for b in net.modules() if isinstance(getattr(b, "shortcut", None), OptionAShortcut)]
    assert len(shortcuts) == 2  # layer2[0] and layer3[0]
    assert all(sum(p.numel() for p in s.parameters()) == 0 for s in shortcuts)
    x = torch.randn(2, 16, 8, 8)
    y = net.layer2[0].shortcut(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert y[:, :8].abs().sum() == 0 and y[:, 24:].abs().sum() == 0


@pytest.mark.parametrize("name", ["res32_cifar", "res10"])
def test_stage_by_stage_calls_equal_forward(name):
    side = SPECS[name][0]
    net = BACKBONES.get(name)().eval()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        h = net.stem(x)
        for stage in net.stage_names[1:]:
            h = getattr(net, stage)(h)
        pooled = h.mean(dim=(2, 3))
        assert torch.allclose(pooled, net(x), atol=1e-6)
        assert torch.equal(h, net.forward_features(x))


def test_pytorch_init_differs_from_kaiming_and_unknown_init_is_user_error():
    torch.manual_seed(1)
    a = BACKBONES.get("res10")(init="kaiming")
    torch.manual_seed(1)
    b = BACKBONES.get("res10")(init="pytorch")
    # kaiming fan_out std for layer1 3x3x64 convs vs PyTorch's kaiming_uniform(a=sqrt(5)) default.
    assert a.layer1[0].conv1.weight.std() > 1.5 * b.layer1[0].conv1.weight.std()
    with pytest.raises(UserError, match="xavier"):
        build_backbone("res10", init="xavier")
    with pytest.raises(UserError, match="res18"):
        build_backbone("res18")


# ---------------------------------------------------------------- heads
F_TINY = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
W_TINY = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
B_TINY = torch.tensor([0.5, -1.0, 0.0])


def _set(head, weight=W_TINY, bias=B_TINY):
    with torch.no_grad():
        head.weight.copy_(weight)
        if head.bias is not None:
            head.bias.copy_(bias)
    return head


def test_fc_head_is_wf_plus_b():
    z = _set(build_head("FC", 2, 3))(F_TINY)
    assert torch.allclose(z, torch.tensor([[3.5, 7.0, 7.0], [1.5, -1.0, 1.0]]))


def test_cos_head_is_scaled_cosine_plus_bias():
    head = _set(build_head("cos", 2, 3, scale=16))
    z = head(F_TINY)
    r = 1 / math.sqrt(2)
    cos = torch.tensor([[0.6, 0.8, 1.4 * r], [1.0, 0.0, r]])
    assert torch.allclose(z, 16 * cos + B_TINY, atol=1e-5)
    assert build_head("cos", 2, 3).scale == 16.0  # default
    assert torch.equal(HEADS.get("cos")(2, 3).bias, torch.zeros(3))  # bias initialised to 0


def test_fcnorm_head_is_unscaled_cosine_without_bias():
    head = _set(build_head("FCNorm", 2, 3, bias=True))
    assert head.bias is None
    r = 1 / math.sqrt(2)
    assert torch.allclose(head(F_TINY), torch.tensor([[0.6, 0.8, 1.4 * r], [1.0, 0.0, r]]), atol=1e-6)


def test_lws_head_scales_the_linear_logits_and_can_freeze_the_linear_part():
    head = _set(build_head("LWS", 2, 3))
    assert torch.equal(head.scales, torch.ones(3))
    with torch.no_grad():
        head.scales.copy_(torch.tensor([2.0, 0.5, -1.0]))
    z = head(F_TINY)
    assert torch.allclose(z, torch.tensor([[7.0, 3.5, -7.0], [3.0, -0.5, -1.0]]))
    head.freeze_linear()
    head(F_TINY).sum().backward()
    assert head.weight.grad is None and head.bias.grad is None
    assert head.scales.grad is not None and head.scales.requires_grad


def test_cosnorm_head_squashes_feature_norm():
    head = _set(build_head("CosNorm", 2, 3))
    assert head.bias is None and head.scale == 30.0
    # f = (3, 4): |f| = 5 -> g = 5/6 * (0.6, 0.8); f = (1, 0): g = 1/2 * (1, 0)
    r = 1 / math.sqrt(2)
    expected = 30 * torch.tensor([[5 / 6 * 0.6, 5 / 6 * 0.8, 5 / 6 * 1.4 * r], [0.5, 0.0, 0.5 * r]])
    assert torch.allclose(head(F_TINY), expected, atol=1e-5)
    assert build_head("CosNorm", 2, 3, scale=16).scale == 16.0


def test_unknown_head_is_user_error():
    with pytest.raises(UserError, match="Linear"):
        build_head("Linear", 2, 3)


@pytest.mark.parametrize("name", ["FC", "cos", "FCNorm", "LWS", "CosNorm"])
def test_every_head_exposes_c_by_d_weight(name):
    head = build_head(name, 8, 5)
    assert isinstance(head.weight, nn.Parameter) and head.weight.shape == (5, 8)
    assert head(torch.randn(4, 8)).shape == (4, 5)


def test_tau_normalize_zero_keeps_weights_and_one_gives_unit_rows():
    head = _set(build_head("FC", 2, 3))
    tau_normalize_(head, 0.0)
    assert torch.equal(head.weight.data, W_TINY)
    tau_normalize_(head, 1.0)
    assert torch.allclose(head.weight.norm(dim=1), torch.ones(3))
    assert torch.allclose(head.weight[1], torch.tensor([0.0, 1.0]))
    assert torch.equal(head.bias.data, B_TINY)


# ---------------------------------------------------------------- pretrained loading
def test_load_pretrained_round_trip_strips_module_prefix(tmp_path):
    src = BACKBONES.get("res32_cifar")()
    path = tmp_path / "w.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in src.state_dict().items()}}, path)
    dst = BACKBONES.get("res32_cifar")()
    loaded, skipped = load_pretrained(dst, path)
    assert skipped == [] and len(loaded) == len(src.state_dict())
    for k, v in src.state_dict().items():
        assert torch.equal(v, dst.state_dict()[k]), k


def test_load_pretrained_maps_torchvision_names_and_skips_fc(tmp_path):
    from lib.utils.tv import models

    tv = models.resnet.ResNet(models.resnet.BasicBlock, [1, 1, 1, 1], num_classes=7)
    state = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}  # old-style file
    torch.save(state, tmp_path / "tv.pth")
    net = build_backbone("res10", pretrained=str(tmp_path / "tv.pth"))
    assert torch.equal(net.stem.conv1.weight, tv.conv1.weight)
    assert torch.equal(net.stem.bn1.running_var, tv.bn1.running_var)
    assert torch.equal(net.layer4[0].conv2.weight, tv.layer4[0].conv2.weight)
    loaded, skipped = load_pretrained(BACKBONES.get("res10")(), tmp_path / "tv.pth")
    assert sorted(skipped) == ["fc.bias", "fc.weight"]
    assert "stem.conv1.weight" in loaded


def _net_with_classifier(num_classes):
    return nn.ModuleDict({"backbone": BACKBONES.get("res32_cifar")(), "classifier": build_head("FC", 64, num_classes)})


def test_load_pretrained_class_count_mismatch_names_key_and_shapes(tmp_path):
    torch.save(_net_with_classifier(100).state_dict(), tmp_path / "c100.pth")
    with pytest.raises(UserError) as err:
        load_pretrained(_net_with_classifier(10), tmp_path / "c100.pth", skip_substrings=())
    msg = str(err.value)
    assert "classifier.weight" in msg and "(100, 64)" in msg and "(10, 64)" in msg and "c100.pth" in msg
    assert "\n" not in msg


def test_load_pretrained_skip_mode_keeps_only_matching_shapes(tmp_path):
    src = _net_with_classifier(100)
    torch.save(src.state_dict(), tmp_path / "c100.pth")
    dst = _net_with_classifier(10)
    loaded, skipped = load_pretrained(dst, tmp_path / "c100.pth", skip_substrings=(), shape_match="skip")
    assert sorted(skipped) == ["classifier.bias", "classifier.weight"]
    assert torch.equal(dst.backbone.stem.conv1.weight, src.backbone.stem.conv1.weight)
    assert dst.classifier.weight.shape == (10, 64)


def test_load_state_dict_file_rejects_missing_unreadable_and_non_state_dict(tmp_path):
    with pytest.raises(UserError, match="nope.pth"):
        load_state_dict_file(tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(UserError, match="junk.pth"):
        load_state_dict_file(tmp_path / "junk.pth")
    torch.save({"epoch": 3}, tmp_path / "meta.pth")
    with pytest.raises(UserError, match="meta.pth.*not a state dict"):
        load_state_dict_file(tmp_path / "meta.pth")
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 3}, tmp_path / "ckpt.pth")
    assert torch.equal(load_state_dict_file(tmp_path / "ckpt.pth")["w"], torch.ones(2))

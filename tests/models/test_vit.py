"""Vision Transformer backbones (lib/models/vit.py): local checkpoints, position-embedding resampling,
layer-wise LR decay, and CE on a tiny ViT through the real data path."""
import math
import os

import pytest
import torch

from lib.config import build_config
from lib.engine.optim import LRSchedule, build_optimizer
from lib.methods import build_method
from lib.models.backbones import build_backbone
from lib.utils.errors import UserError

pytest.importorskip("timm")
from lib.models.vit import ViTBackbone  # noqa: E402


def small_vit(size, **kw):
    """A ViT-B/16-shaped model (16-px patches) with few, narrow blocks: cheap at 224 and 384 px."""
    torch.manual_seed(kw.pop("seed", 0))
    return ViTBackbone((size, size), patch_size=16, embed_dim=32, depth=2, num_heads=2, **kw)


def test_a_224_px_checkpoint_loads_at_384_px_with_resampled_position_embeddings(tmp_path):
    src = small_vit(224)
    path = tmp_path / "mae_like.pth"
    state = dict(src.state_dict())
    state.pop("fc_norm.weight"), state.pop("fc_norm.bias")  # an MAE encoder has `norm`, no fc_norm
    state.update({"norm.weight": torch.ones(32), "norm.bias": torch.zeros(32),
                  "decoder_embed.weight": torch.zeros(16, 32), "mask_token": torch.zeros(1, 1, 16)})
    torch.save({"model": state, "epoch": 799}, path)

    dst = small_vit(384, seed=1)
    loaded, skipped = dst.load_pretrained(str(path))
    assert dst.pos_embed.shape == (1, 1 + 24 * 24, 32) and src.pos_embed.shape == (1, 1 + 14 * 14, 32)
    assert set(skipped) == {"norm.weight", "norm.bias", "decoder_embed.weight", "mask_token"}
    for k, v in src.state_dict().items():
        if k.startswith("fc_norm"):
            continue
        if k == "pos_embed":  # cls position kept, the 14x14 grid resampled to 24x24
            assert torch.equal(dst.pos_embed[:, :1], v[:, :1])
            grid = v[:, 1:].reshape(1, 14, 14, 32).permute(0, 3, 1, 2)
            want = torch.nn.functional.interpolate(grid, size=(24, 24), mode="bicubic", antialias=True,
                                                   align_corners=False)
            assert torch.allclose(dst.pos_embed[:, 1:], want.permute(0, 2, 3, 1).reshape(1, -1, 32), atol=1e-5)
        else:
            assert torch.equal(dst.state_dict()[k], v), k
    assert dst(torch.randn(1, 3, 384, 384)).shape == (1, 32)


def test_a_missing_or_mismatched_checkpoint_is_one_line_naming_file_keys_and_shapes(tmp_path):
    with pytest.raises(UserError, match=r"nope\.pth does not exist .*never downloaded"):
        build_backbone("vit_tiny_p4", image_size=(32, 32), pretrained=str(tmp_path / "nope.pth"))
    other = ViTBackbone((32, 32), patch_size=4, embed_dim=48, depth=6, num_heads=4)
    path = tmp_path / "wide.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(UserError) as e:
        build_backbone("vit_tiny_p4", image_size=(32, 32), pretrained=str(path))
    msg = str(e.value)
    assert "\n" not in msg and "wide.pth" in msg
    assert "shape mismatch" in msg and "cls_token: file (1, 1, 48) vs model (1, 1, 64)" in msg
    shallow = ViTBackbone((32, 32), patch_size=4, embed_dim=64, depth=4, num_heads=4)
    torch.save(shallow.state_dict(), path)
    with pytest.raises(UserError, match=r"missing keys blocks\.4\."):
        build_backbone("vit_tiny_p4", image_size=(32, 32), pretrained=str(path))


def test_a_framework_checkpoint_of_a_ce_vit_run_initialises_the_backbone(tmp_path):
    cfg = build_config("", ["BACKBONE.TYPE", "vit_tiny_p4", "INPUT_SIZE", "(28, 28)"])
    method = build_method(cfg, [10] * 4)
    path = tmp_path / "run.pth"
    torch.save({"state_dict": method.state_dict(), "epoch": 3}, path)
    net = build_backbone("vit_tiny_p4", image_size=(28, 28), pretrained=str(path))
    for k, v in method.net.backbone.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k


def test_layer_wise_decay_and_no_weight_decay_groups_follow_beit_through_warmup_and_cosine():
    cfg = build_config("", ["BACKBONE.TYPE", "vit_tiny_p4", "INPUT_SIZE", "(28, 28)", "TRAIN.OPTIMIZER.TYPE", "ADAMW",
                            "TRAIN.OPTIMIZER.BASE_LR", "5e-4", "TRAIN.OPTIMIZER.WEIGHT_DECAY", "0.05",
                            "TRAIN.OPTIMIZER.LAYER_DECAY", "0.75", "TRAIN.OPTIMIZER.NO_WEIGHT_DECAY_1D", "True",
                            "TRAIN.LR_SCHEDULER.TYPE", "warmup_cosine", "TRAIN.LR_SCHEDULER.WARM_EPOCH", "1",
                            "TRAIN.LR_SCHEDULER.ETA_MIN", "1e-6", "TRAIN.MAX_EPOCH", "3"])
    method = build_method(cfg, [10] * 4)
    opt = build_optimizer(cfg, method)
    vit = method.net.backbone
    depth = len(vit.blocks)  # 6: ids 0 (embeddings) .. 7 (fc_norm + head)

    def group_of(p):
        return next(g for g in opt.param_groups if any(q is p for q in g["params"]))

    block0, head = group_of(vit.blocks[0].attn.qkv.weight), group_of(method.net.head.weight)
    assert block0["lr_scale"] == pytest.approx(0.75 ** depth) and head["lr_scale"] == 1.0
    assert group_of(vit.patch_embed.proj.weight)["lr_scale"] == pytest.approx(0.75 ** (depth + 1))
    assert group_of(vit.pos_embed)["weight_decay"] == 0.0 and group_of(vit.cls_token)["weight_decay"] == 0.0
    assert group_of(vit.blocks[0].norm1.weight)["weight_decay"] == 0.0 and block0["weight_decay"] == 0.05
    sch = LRSchedule(cfg, opt)
    sch.set_epoch(1)
    sch.step(1, 5, 10)  # half-way through the 1-epoch warm-up
    assert block0["lr"] == pytest.approx(5e-4 * 0.5 * 0.75 ** depth) and head["lr"] == pytest.approx(2.5e-4)
    sch.step(3, 0, 10)  # t = 2: half of the cosine over [1, 3]
    f = 1e-6 / 5e-4 + (1 - 1e-6 / 5e-4) * (1 + math.cos(math.pi / 2)) / 2
    assert head["lr"] == pytest.approx(5e-4 * f) and block0["lr"] == pytest.approx(5e-4 * f * 0.75 ** depth)


def test_ce_on_a_tiny_vit_trains_and_the_stage_interface_matches_forward(tiny_cfg):
    from lib.engine.trainer import train

    cfg = build_config(str(tiny_cfg), ["NAME", "vit", "BACKBONE.TYPE", "vit_tiny_p4", "TRAIN.MAX_EPOCH", "1",
                                       "TRAIN.OPTIMIZER.TYPE", "ADAMW", "TRAIN.OPTIMIZER.BASE_LR", "1e-3",
                                       "BACKBONE.DROP_PATH", "0.1"])
    results = train(cfg)
    assert 0 <= results["top1"] <= 100 and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "vit", "models", "latest.pth"))
    vit = build_backbone("vit_tiny_p4", image_size=(28, 28)).eval()
    x = torch.randn(2, 3, 28, 28)
    stages = vit.forward_stages(x)
    assert list(stages)[:2] == ["stem", "block0"] and stages["block5"].shape == (2, 1 + 49, 64)
    assert torch.allclose(vit.pool(stages["block5"]), vit(x), atol=1e-6)

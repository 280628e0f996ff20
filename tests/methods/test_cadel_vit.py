"""CADEL on Vision Transformers (docs/methods/cadel.md: ViT heads, loss, optimisation, tau and headline): the aux
heads tap blocks 7 and 9, layer-wise decay gives each aux head its tapped block's LR, the sigmoid BCE cascade on a
hand-computed batch, the configs, CE / re-balancing losses / NCL on a ViT, and the end-to-end CPU run of the tiny
ViT (launcher, SIGKILL + --ar, valid.py, tools/posthoc_tau.py) on the tiny Fashion-MNIST-LT fixture."""
import glob
import json
import math
import os

import pytest
import torch
from torch.nn import functional as F

from conftest import PY, ROOT, latest_weights, run_cli
from lib.config import build_config
from lib.engine.optim import LRSchedule, build_optimizer
from lib.methods import build_method
from lib.methods.cadel import cascade_loss, sigmoid_terms
from lib.utils.errors import UserError

pytest.importorskip("timm")
from lib.models import vit  # noqa: E402
from lib.models.aux_heads import ViTAuxHead  # noqa: E402

COUNTS = [50, 20, 10, 5, 2]
VIT_OPTS = ["METHOD", "cadel", "CADEL.AUX_HEAD", "vit", "CADEL.LOSS", "sigmoid", "CADEL.HEADLINE", "mean",
            "CADEL.WEIGHTING", "per_sample"]


@pytest.fixture
def narrow_b16(monkeypatch):
    """BACKBONE.TYPE vit_b16 builds a ViT-B/16-shaped model (16-px patches, 12 blocks) of width 32, 2 heads:
    the real tap indices and layer ids at a fraction of the cost."""
    def narrow(in_channels=3, image_size=(224, 224), drop_path=0.0):
        return vit.ViTBackbone(image_size, in_channels, drop_path, patch_size=16, embed_dim=32, depth=12,
                               num_heads=2, mlp_ratio=4.0, qkv_bias=True, norm_layer=vit._LN)

    monkeypatch.setitem(vit.FACTORIES, "vit_b16", narrow)


def cadel_vit(*opts, counts=COUNTS):
    torch.manual_seed(0)
    cfg = build_config("", [*VIT_OPTS, "BACKBONE.TYPE", "vit_b16", "INPUT_SIZE", "(32, 32)", *opts])
    return build_method(cfg, list(counts))


# ---------------------------------------------------------------- architecture
def test_vit_aux_heads_read_the_outputs_of_blocks_7_and_9_and_the_main_head_the_pooled_feature(narrow_b16):
    m = cadel_vit("BACKBONE.DROP_PATH", "0.1").eval()  # CADEL.TAPS [] -> the release's blocks 7 and 9
    net, vit_ = m.net, m.net.backbone
    assert net.taps == ["block7", "block9"] and all(isinstance(h, ViTAuxHead) for h in net.aux_heads)
    seen = {}
    for i in (7, 9, 11):
        vit_.blocks[i].register_forward_hook(lambda mod, inp, out, i=i: seen.__setitem__(f"block{i}", out))
    for k, h in enumerate(net.aux_heads):
        h.register_forward_pre_hook(lambda mod, inp, k=k: seen.__setitem__(f"aux{k}", inp[0]))
    x = torch.randn(3, 3, 32, 32)
    z1, z2, z3 = m({"image": x})
    assert torch.equal(seen["aux0"], seen["block7"]) and torch.equal(seen["aux1"], seen["block9"])
    # aux head: 2 extra blocks -> mean over the patch tokens (cls left out, no LayerNorm) -> CosNorm
    for z, h, tokens in ((z1, net.aux_heads[0], seen["block7"]), (z2, net.aux_heads[1], seen["block9"])):
        g = h.blocks[1](h.blocks[0](tokens))[:, 1:].mean(dim=1)
        assert torch.allclose(z, h.head(g), atol=1e-5)
        assert len(h.blocks) == 2 and [n for n, _ in h.named_children()] == ["blocks", "head"]
    # main head: CosNorm on fc_norm(mean patch token of the last block)
    f = vit_.fc_norm(seen["block11"][:, 1:].mean(dim=1))
    assert torch.allclose(z3, net.last_head(f), atol=1e-5)
    assert torch.allclose(m.predict([z1, z2, z3])["logits"], (z1 + z2 + z3) / 3)
    # drop path = dpr[i] of the linear 0 -> 0.1 rule over 12 blocks
    assert net.aux_heads[0].drop_path == pytest.approx(0.1 * 7 / 11) and net.aux_heads[1].drop_path == pytest.approx(0.1 * 9 / 11)


def test_vit_aux_blocks_keep_pytorch_init_as_released_or_take_timms_trunc_normal(narrow_b16):
    qkv = cadel_vit().net.aux_heads[0].blocks[0].attn.qkv  # PyTorch's Linear init: U(+-1/sqrt(fan_in)), bias too
    bound = 1 / math.sqrt(qkv.in_features)
    assert qkv.weight.abs().max() <= bound and qkv.weight.std().item() > 0.5 * bound / math.sqrt(3)
    assert torch.count_nonzero(qkv.bias) == qkv.bias.numel()
    qkv = cadel_vit("CADEL.VIT_AUX_INIT", "trunc_normal").net.aux_heads[0].blocks[0].attn.qkv
    assert 0.015 < qkv.weight.std().item() < 0.025 and torch.count_nonzero(qkv.bias) == 0


def test_vit_needs_the_vit_aux_head_and_valid_block_taps(narrow_b16):
    with pytest.raises(UserError, match="CADEL.AUX_HEAD cnn reads feature maps.*set CADEL.AUX_HEAD vit"):
        cadel_vit("CADEL.AUX_HEAD", "cnn")
    with pytest.raises(UserError, match=r"block0 .. block11\), got 'stem'"):
        cadel_vit("CADEL.TAPS", "['stem', 'block9']")
    with pytest.raises(UserError, match="CADEL.TAPS: 'block12' is not a stage"):
        cadel_vit("CADEL.TAPS", "['block7', 'block12']")
    cfg = build_config("", [*VIT_OPTS, "BACKBONE.TYPE", "vit_tiny_p4", "INPUT_SIZE", "(28, 28)"])
    assert build_method(cfg, COUNTS).net.taps == ["block3", "block4"]  # 6 blocks: floor(7*6/12), floor(9*6/12)


def test_layer_decay_gives_block0_block7s_aux_head_and_the_final_head_their_lr_through_warmup_and_cosine(narrow_b16):
    m = cadel_vit("TRAIN.OPTIMIZER.TYPE", "ADAMW", "TRAIN.OPTIMIZER.BASE_LR", "5e-4", "TRAIN.OPTIMIZER.LAYER_DECAY",
                  "0.75", "TRAIN.OPTIMIZER.NO_WEIGHT_DECAY_1D", "True", "TRAIN.OPTIMIZER.WEIGHT_DECAY", "0.05",
                  "TRAIN.LR_SCHEDULER.TYPE", "warmup_cosine", "TRAIN.LR_SCHEDULER.WARM_EPOCH", "1",
                  "TRAIN.LR_SCHEDULER.ETA_MIN", "1e-6", "TRAIN.MAX_EPOCH", "3")
    opt = build_optimizer(m.cfg, m)
    net = m.net

    def group_of(p):
        return next(g for g in opt.param_groups if any(q is p for q in g["params"]))

    # BEiT ids: 0 embeddings, block i -> i + 1, 13 = fc_norm and the heads; scale 0.75^(13 - id)
    block0 = group_of(net.backbone.blocks[0].mlp.fc1.weight)
    aux7 = group_of(net.aux_heads[0].blocks[1].mlp.fc1.weight)
    aux7_cos = group_of(net.aux_heads[0].head.weight)
    aux9 = group_of(net.aux_heads[1].blocks[0].attn.qkv.weight)
    head = group_of(net.last_head.weight)
    # the release: the aux head on block i gets layer id i (block i-1's), so 0.75^6 and 0.75^4
    want = {"block0": 0.75 ** 12, "aux7": 0.75 ** 6, "aux9": 0.75 ** 4, "head": 1.0}
    got = {"block0": block0, "aux7": aux7, "aux9": aux9, "head": head}
    for k, g in got.items():
        assert g["lr_scale"] == pytest.approx(want[k]), k
    assert aux7_cos["lr_scale"] == pytest.approx(0.75 ** 6)  # the aux head's CosNorm too
    assert group_of(net.aux_heads[0].blocks[0].norm1.weight)["weight_decay"] == 0.0 and aux7["weight_decay"] == 0.05
    sch = LRSchedule(m.cfg, opt)
    sch.set_epoch(1)
    sch.step(1, 3, 4)  # t = 0.75 epochs of the 1-epoch linear warm-up
    for k, g in got.items():
        assert g["lr"] == pytest.approx(5e-4 * 0.75 * want[k]), k
    sch.step(3, 1, 2)  # t = 2.5: three quarters of the cosine over [1, 3]
    f = 1e-6 / 5e-4 + (1 - 1e-6 / 5e-4) * (1 + math.cos(math.pi * 0.75)) / 2
    for k, g in got.items():
        assert g["lr"] == pytest.approx(5e-4 * f * want[k]), k


def test_tapped_block_lr_layer_gives_the_aux_heads_their_blocks_own_id(narrow_b16):
    m = cadel_vit("TRAIN.OPTIMIZER.LAYER_DECAY", "0.75", "CADEL.AUX_LR_LAYER", "tapped_block")
    opt = build_optimizer(m.cfg, m)
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    assert scale[id(m.net.aux_heads[0].head.weight)] == pytest.approx(0.75 ** 5)
    assert scale[id(m.net.aux_heads[1].blocks[0].attn.qkv.weight)] == pytest.approx(0.75 ** 3)


def test_epoch_offset_one_reproduces_the_releases_one_based_warmup_cosine(narrow_b16):
    """EPOCH_OFFSET 1: t = e + i/n: the warm-up starts at lr/W, peaks after W - 1 epochs and the last epoch runs
    past the half cycle (the LR rises again above min_lr)."""
    m = cadel_vit("TRAIN.LR_SCHEDULER.TYPE", "warmup_cosine", "TRAIN.LR_SCHEDULER.WARM_EPOCH", "5",
                  "TRAIN.LR_SCHEDULER.EPOCH_OFFSET", "1.0", "TRAIN.OPTIMIZER.BASE_LR", "1.0", "TRAIN.MAX_EPOCH", "10")
    sch = LRSchedule(m.cfg, build_optimizer(m.cfg, m))
    f = sch.lr_factor
    assert f(1, 0.0) == pytest.approx(1 / 5) and f(4, 0.0) == pytest.approx(4 / 5) and f(5, 0.0) == pytest.approx(1.0)
    t = 10 + 0.5  # the middle of the last epoch: (t - W) / (E - W) = 1.1
    assert f(10, 0.5) == pytest.approx((1 + math.cos(math.pi * (t - 5) / 5)) / 2) and f(10, 0.5) > f(10, 0.0)


# ---------------------------------------------------------------- the ViT loss
def test_sigmoid_bce_cascade_equals_a_hand_computed_batch_of_three_samples_two_heads():
    # C = 2; logits 0, +-ln 3 give sigmoid 1/2, 3/4, 1/4. l = sum_c BCE = -log s(z_y) - log(1 - s(z_other)).
    ln3 = math.log(3.0)
    y = torch.tensor([0, 1, 0])
    z1 = torch.tensor([[ln3, -ln3], [0.0, 0.0], [ln3, 0.0]])  # p1 = .75, .5, .75
    z2 = torch.tensor([[-ln3, -ln3], [0.0, ln3], [0.0, -ln3]])  # p2 = .25, .75, .5
    a, b = math.log(4 / 3), math.log(2.0)  # -log .75, -log .5
    l1 = [2 * a, 2 * b, a + b]
    l2 = [2 * b + a, a + b, a + b]  # -log .25 = 2 ln 2
    # B = 3 bins, edges 0, 1/3, 2/3, 1 (+1e-6); gamma 1, base 2; T = 0.25
    # head 1: m = p1 = .75, .5, .75 -> bins 2, 1, 2 -> n = 0, 1, 2 -> w = 2 + 2/3, 2 + 1/3, 2 + 2/3
    w1 = [2 + 2 / 3, 2 + 1 / 3, 2 + 2 / 3]
    # head 2: m = (p1 + p2)/2 = .5, .625, .625 -> all bin 1 -> w = 2 + 3/3 = 3
    w2 = [3.0, 3.0, 3.0]
    T = 0.25
    L1 = T * sum(l1) / 3 + (1 - T) * sum(w * l for w, l in zip(w1, l1)) / 3
    L2 = T * sum(l2) / 3 + (1 - T) * sum(w * l for w, l in zip(w2, l2)) / 3
    assert (L1, L2) == (pytest.approx(2.0913413, abs=1e-6), pytest.approx(3.0296958, abs=1e-6))
    loss, per_head = cascade_loss([z1, z2], y, T, 3, 1.0, 2.0, terms=sigmoid_terms)
    assert per_head[0].item() == pytest.approx(L1, abs=1e-5) and per_head[1].item() == pytest.approx(L2, abs=1e-5)
    assert loss.item() == pytest.approx(L1 + L2, abs=1e-5)
    # the same through the method and its config: CADEL.LOSS sigmoid, T = 1 - 3/4 in epoch 3 of 4
    cfg = build_config("", [*VIT_OPTS, "BACKBONE.TYPE", "vit_tiny_p4", "INPUT_SIZE", "(28, 28)", "CADEL.BINS", "3",
                            "CADEL.GAMMA", "1.0", "CADEL.BASE_WEIGHT", "2.0", "CADEL.TAPS", "['block4']",
                            "TRAIN.MAX_EPOCH", "4"])
    m = build_method(cfg, [5, 5])
    total, logs = m.loss([z1, z2], {"label": y}, 3)
    assert logs["T"] == 0.25 and total.item() == pytest.approx(L1 + L2, abs=1e-5)


# ---------------------------------------------------------------- other methods on a ViT
def test_ce_and_balanced_softmax_train_a_vit_through_backbone_type():
    counts = [50, 20, 10, 5, 2]
    for loss_type in ("CrossEntropy", "BalancedSoftmaxCE"):
        torch.manual_seed(0)
        cfg = build_config("", ["BACKBONE.TYPE", "vit_tiny_p4", "INPUT_SIZE", "(28, 28)", "LOSS.LOSS_TYPE", loss_type,
                                "BACKBONE.DROP_PATH", "0.1"])
        m = build_method(cfg, counts).train()
        assert m.net.backbone.patch_embed.grid_size == (7, 7)
        batch = {"image": torch.randn(6, 3, 28, 28), "label": torch.tensor([0, 1, 2, 3, 4, 0])}
        logits = m(batch)
        loss, _ = m.loss(logits, batch, 1)
        prior = torch.log(torch.tensor(counts, dtype=torch.float)) if loss_type != "CrossEntropy" else 0
        assert loss.item() == pytest.approx(F.cross_entropy(logits + prior, batch["label"]).item(), rel=1e-5)
        loss.backward()
        assert m.net.backbone.blocks[0].attn.qkv.weight.grad.abs().sum() > 0


def test_ncl_builds_vit_experts_at_the_input_size_and_refuses_batching_them_in_one_line():
    cfg = build_config("", ["METHOD", "ncl", "BACKBONE.TYPE", "vit_tiny_p4", "INPUT_SIZE", "(28, 28)",
                            "BACKBONE.DROP_PATH", "0.1"])
    m = build_method(cfg, COUNTS)
    e = m.experts[0].backbone
    assert e.patch_embed.grid_size == (7, 7) and e.blocks[5].drop_path1.drop_prob == pytest.approx(0.1)
    assert m.predict(m({"image": torch.randn(2, 3, 28, 28)}))["logits"].shape == (2, 5)
    cfg = build_config("", ["METHOD", "ncl", "BACKBONE.TYPE", "vit_tiny_p4", "INPUT_SIZE", "(28, 28)",
                            "NCL.BATCHED_EXPERTS", "True"])
    with pytest.raises(UserError, match="NCL.BATCHED_EXPERTS True does not support .*ViTBackbone.*set NCL"):
        build_method(cfg, COUNTS)


# ---------------------------------------------------------------- configs
VIT_B16_CONFIGS = sorted(glob.glob(os.path.join(ROOT, "configs", "*", "cadel_vit_b16_*.yaml")))


def test_there_are_six_vit_b16_configs_that_expect_a_local_checkpoint_named_in_their_header(narrow_b16):
    names = [os.path.relpath(p, ROOT) for p in VIT_B16_CONFIGS]
    assert names == [f"configs/{d}/cadel_vit_b16_{s}.yaml" for d in ("imagenet_lt", "inat18", "places_lt")
                     for s in (224, 384)]
    for p in VIT_B16_CONFIGS:
        cfg = build_config(p)
        size = int(p[-8:-5])
        assert cfg.INPUT_SIZE == (size, size) and cfg.BACKBONE.TYPE == "vit_b16"
        c, o = cfg.CADEL, cfg.TRAIN.OPTIMIZER
        assert (c.LOSS, c.HEADLINE, c.AUX_HEAD, c.AUX_DEPTH, list(c.TAPS)) == ("sigmoid", "mean", "vit", 2,
                                                                              ["block7", "block9"])
        assert list(c.POSTHOC_TAUS) == pytest.approx([1.3, 1.4, 1.5, 1.6, 1.7, 1.8])
        assert (o.TYPE, o.LAYER_DECAY, o.WEIGHT_DECAY, o.NO_WEIGHT_DECAY_1D) == ("ADAMW", 0.75, 0.05, True)
        assert cfg.TRAIN.LR_SCHEDULER.TYPE == "warmup_cosine" and cfg.TRAIN.LR_SCHEDULER.WARM_EPOCH == 5
        ckpt = os.path.basename(cfg.BACKBONE.PRETRAINED_MODEL)
        assert ckpt in open(p).read().split("NAME:")[0]  # the header names the file it expects
        with pytest.raises(UserError, match=f"{ckpt} does not exist .*never downloaded"):
            build_method(cfg, COUNTS)
    places384 = build_config(os.path.join(ROOT, "configs/places_lt/cadel_vit_b16_384.yaml"))
    assert (places384.TRAIN.OPTIMIZER.BASE_LR, places384.TRAIN.MAX_EPOCH, places384.TRAIN.BATCH_SIZE) == (1.25e-4, 20, 32)


def test_inat_config_loads_an_mae_checkpoint_at_128_px_resampled_with_the_head_reinitialised(narrow_b16, tmp_path):
    src = vit.FACTORIES["vit_b16"](image_size=(128, 128))
    state = {k: v for k, v in src.state_dict().items() if not k.startswith("fc_norm")}
    state.update({"norm.weight": torch.ones(32), "norm.bias": torch.zeros(32), "mask_token": torch.zeros(1, 1, 16),
                  "decoder_pred.weight": torch.zeros(8, 16)})
    path = tmp_path / "iNat18_Res_128.pth"
    torch.save({"model": state}, path)
    cfg = build_config(os.path.join(ROOT, "configs/inat18/cadel_vit_b16_224.yaml"),
                       ["BACKBONE.PRETRAINED_MODEL", str(path), "DATASET.TRAIN_JSON", ""])
    m = build_method(cfg, COUNTS)
    b = m.net.backbone
    assert b.pos_embed.shape == (1, 1 + 14 * 14, 32) and src.pos_embed.shape == (1, 1 + 8 * 8, 32)
    assert torch.equal(b.blocks[11].mlp.fc2.weight, src.blocks[11].mlp.fc2.weight)
    assert b.blocks[7].drop_path1.drop_prob == pytest.approx(0.2 * 7 / 11)  # iNat 224: drop path 0.2
    assert m.net.last_head.weight.std().item() == pytest.approx(2e-5, rel=0.2)  # trunc_normal(std 2e-5)


def test_fashion_mnist_vit_configs_share_the_ce_rows_budget_and_the_vit_recipe():
    ce = build_config(os.path.join(ROOT, "configs/fashion_mnist_lt/ce_vit_tiny.yaml"))
    cd = build_config(os.path.join(ROOT, "configs/fashion_mnist_lt/cadel_vit_tiny.yaml"))
    for cfg in (ce, cd):
        assert (cfg.TRAIN.MAX_EPOCH, cfg.TRAIN.BATCH_SIZE, cfg.SEED, cfg.BACKBONE.TYPE) == (12, 128, 42, "vit_tiny_p4")
    assert ce.TRAIN.OPTIMIZER == cd.TRAIN.OPTIMIZER and ce.TRAIN.LR_SCHEDULER == cd.TRAIN.LR_SCHEDULER
    assert ce.TRANSFORMS == cd.TRANSFORMS and ce.BACKBONE == cd.BACKBONE
    assert (ce.TRAIN.OPTIMIZER.TYPE, ce.TRAIN.OPTIMIZER.LAYER_DECAY, ce.TRAIN.LR_SCHEDULER.TYPE) == (
        "ADAMW", 0.75, "warmup_cosine")
    assert (cd.METHOD, cd.CADEL.LOSS, cd.CADEL.HEADLINE, list(cd.CADEL.TAPS)) == ("cadel", "sigmoid", "mean",
                                                                                ["block3", "block4"])


# ---------------------------------------------------------------- release ViT YAML
RELEASE_VIT = """
coslr: true
endlr: 0.0
criterions:
  mixup: {alpha: 0.5}
model_dir: null
networks:
  feat_model:
    def_file: ./models/ViT_Ensemble.py
    fix: false
    optim_params: {lr: 0.0005, momentum: 0.9, weight_decay: 0.05, min_lr: 1.0e-07, layer_decay: 0.75, adamW2: 0.99}
    params: {num_classes: 8142, scale: 30, classifier_num: 3, aux_depth: 2, drop_path: 0.2, global_pool: true,
             checkpoint: ./pretrained/iNat18_Res_128.pth}
training_opt:
  batch_size: 128
  dataset: iNaturalist18
  num_classes: 8142
  num_epochs: 100
  num_workers: 12
  image_size: 224
  feature_dim: 768
  bins: 8
  gamma: 1
  base_weight: 2
  warmup_epoch: 5
  log_dir: ./logs/iNat/ViT_B_16_224_stage1
"""


def test_converter_maps_a_release_vit_yaml_onto_the_vit_recipe(tmp_path):
    import yaml

    from conftest import load_tool

    conv = load_tool("convert_cadel_config").convert(yaml.safe_load(RELEASE_VIT))
    out = tmp_path / "ours.yaml"
    out.write_text(yaml.safe_dump(conv.out))
    cfg = build_config(str(out))
    assert (cfg.BACKBONE.TYPE, cfg.BACKBONE.DROP_PATH, cfg.BACKBONE.PRETRAINED_MODEL) == (
        "vit_b16", 0.2, "./pretrained/iNat18_Res_128.pth")
    c, o, s = cfg.CADEL, cfg.TRAIN.OPTIMIZER, cfg.TRAIN.LR_SCHEDULER
    assert (c.AUX_HEAD, c.AUX_DEPTH, list(c.TAPS), c.LOSS, c.HEADLINE, c.LAST_HEAD_INIT_STD) == (
        "vit", 2, ["block7", "block9"], "sigmoid", "mean", 2e-5)
    assert list(c.POSTHOC_TAUS) == pytest.approx([1.3, 1.4, 1.5, 1.6, 1.7, 1.8]) and c.MIXUP_ALPHA == 0.5
    assert (o.TYPE, o.BASE_LR, o.WEIGHT_DECAY, o.LAYER_DECAY, tuple(o.BETAS), o.NO_WEIGHT_DECAY_1D) == (
        "ADAMW", 5e-4, 0.05, 0.75, (0.9, 0.99), True)
    assert (s.TYPE, s.WARM_EPOCH, s.ETA_MIN) == ("warmup_cosine", 5, 1e-7)
    assert cfg.INPUT_SIZE == (224, 224) and not cfg.TRAIN.AMP.ENABLE and cfg.TEST.LOGIT_ADJUST.TAU == 1.0
    dropped = dict(conv.dropped)
    assert "coslr" in dropped and "networks.feat_model.params.classifier_num" in dropped
    assert "networks.feat_model.optim_params.momentum" in dropped


# ---------------------------------------------------------------- end to end on the CPU
TINY_OPTS = [*VIT_OPTS, "BACKBONE.TYPE", "vit_tiny_p4", "BACKBONE.DROP_PATH", "0.1", "CADEL.MIXUP_ALPHA", "0.5",
             "CADEL.TAPS", "['block3', 'block4']", "TRAIN.MAX_EPOCH", "2", "SHOW_STEP", "1", "TRAIN.NUM_WORKERS", "0",
             "DETERMINISTIC", "True", "TRAIN.OPTIMIZER.TYPE", "ADAMW", "TRAIN.OPTIMIZER.BASE_LR", "1e-3",
             "TRAIN.OPTIMIZER.WEIGHT_DECAY", "0.05", "TRAIN.OPTIMIZER.LAYER_DECAY", "0.75",
             "TRAIN.OPTIMIZER.NO_WEIGHT_DECAY_1D", "True", "TRAIN.LR_SCHEDULER.TYPE", "warmup_cosine",
             "TRAIN.LR_SCHEDULER.WARM_EPOCH", "1", "TRAIN.LR_SCHEDULER.ETA_MIN", "1e-6",
             "CADEL.POSTHOC_TAUS", "[0.0, 1.3, 1.8]"]


@pytest.mark.slow
def test_tiny_vit_cadel_launcher_run_then_valid_and_posthoc_report_every_head(tiny_cfg):
    # kill / resume: tests/methods/test_every_method.py
    out = os.path.join(os.path.dirname(tiny_cfg), "out")
    r = run_cli(["bash", "data_parallel_train.sh", str(tiny_cfg), "cpu", "NAME", "killed", *TINY_OPTS])
    assert r.returncode == 0, r.stderr[-2000:]
    a = latest_weights(os.path.join(out, "killed"))
    assert any(k.startswith("net.aux_heads.0.blocks.1.") for k in a)

    r = run_cli([PY, "valid.py", str(tiny_cfg), "NAME", "killed", *TINY_OPTS])
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [ln.split("|")[1].strip() for ln in r.stdout.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert rows == ["prediction", "main (mean of heads' logits)", "head1", "head2", "head3", "last_head"]
    res = json.load(open(glob.glob(os.path.join(out, "killed", "eval", "*", "results.json"))[0]))
    assert res["members"]["last_head"]["top1"] == res["members"]["head3"]["top1"]

    r = run_cli([PY, "tools/posthoc_tau.py", str(tiny_cfg), "NAME", "killed", *TINY_OPTS])
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.load(open(os.path.join(out, "killed", "posthoc_tau", "results.json")))
    assert res["split"] == "test" and res["selection_split"] == "valid" and res["tau_grid"] == [0.0, 1.3, 1.8]
    assert set(res["tau"]) == {"main", "head1", "head2", "head3", "last_head"}
    assert all(t in (0.0, 1.3, 1.8) for t in res["tau"].values())

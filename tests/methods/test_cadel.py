"""CADEL (docs/methods/cadel.md): the cascaded re-weighted loss, mixup, heads at increasing depth, the post-hoc
tau search (stage two), the release-config converter and the end-to-end CPU run (launcher, kill + --ar,
valid.py, tools/posthoc_tau.py) on the tiny Fashion-MNIST-LT fixture."""
import json
import math
import os

import numpy as np
import pytest
import torch
import yaml
from torch.nn import functional as F

from conftest import PY, ROOT, load_tool, run_cli
from lib.config import build_config
from lib.evaluation import tau_search
from lib.methods import build_method
from lib.methods.cadel import anneal_T, bin_weights, cascade_loss, sigmoid_terms, softmax_terms
from lib.models.aux_heads import build_aux_head
from lib.models.heads import CosNorm
from lib.utils.errors import UserError

COUNTS = [50, 20, 10, 5, 2]


def cadel(*opts, counts=COUNTS):
    cfg = build_config("", ["METHOD", "cadel", "BACKBONE.TYPE", "res32_cifar", *opts])
    return build_method(cfg, list(counts))


def logits_with_true_prob(p, y, C=4):
    """Logits (N x C) whose softmax gives probability p_i to class y_i and splits the rest evenly."""
    N = len(p)
    probs = torch.full((N, C), 0.0)
    for i in range(N):
        probs[i] = (1 - p[i]) / (C - 1)
        probs[i, y[i]] = p[i]
    return probs.clamp_min(1e-12).log()


# ---------------------------------------------------------------- per-sample weights
def test_bin_weights_equal_a_hand_computed_batch_including_m_equal_one():
    # B = 4, edges 0, .25, .5, .75, 1 + 1e-6: bins of the six confidences: 0, 0, 1, 3, 3 (m = 1), 3 (m = 1)
    m = torch.tensor([0.05, 0.24, 0.25, 0.75, 1.0, 1.0])
    w, n = bin_weights(m, bins=4, gamma=1.0, base=2.0)
    assert n.tolist() == [2, 1, 0, 3]
    assert torch.allclose(w, torch.tensor([2 + 2 / 6, 2 + 2 / 6, 2 + 1 / 6, 2.5, 2.5, 2.5]))
    w, _ = bin_weights(m, bins=4, gamma=2.0, base=1.0)  # base + gamma * n_b / N
    assert torch.allclose(w, torch.tensor([1 + 4 / 6, 1 + 4 / 6, 1 + 2 / 6, 2.0, 2.0, 2.0]))
    w, _ = bin_weights(m, bins=4, gamma=1.0, base=2.0, down_weight=True)  # base - gamma * n_b / N
    assert torch.allclose(w, torch.tensor([2 - 2 / 6, 2 - 2 / 6, 2 - 1 / 6, 1.5, 1.5, 1.5]))
    # one bin: every sample gets base + gamma
    w, n = bin_weights(m, bins=1, gamma=1.0, base=2.0)
    assert n.tolist() == [6] and torch.allclose(w, torch.full((6,), 3.0))


def test_T_runs_from_one_minus_one_over_E_to_zero():
    assert anneal_T(1, 10) == pytest.approx(0.9)
    assert anneal_T(5, 10) == pytest.approx(0.5)
    assert anneal_T(10, 10) == 0.0
    m = cadel("TRAIN.MAX_EPOCH", "4")
    out = [torch.randn(3, 5) for _ in range(3)]
    batch = {"label": torch.tensor([0, 1, 2])}
    assert [m.loss(out, batch, e)[1]["T"] for e in (1, 2, 3, 4)] == [0.75, 0.5, 0.25, 0.0]


def test_head_k_weights_use_the_running_mean_of_heads_one_to_k():
    y = torch.tensor([0, 1, 2, 3])
    # true-class probabilities per head (rows: heads 1..3)
    P = [[0.9, 0.1, 0.6, 0.3], [0.7, 0.3, 0.2, 0.35], [0.2, 0.95, 0.1, 0.4]]
    logits = [logits_with_true_prob(p, y) for p in P]
    T, B, gamma, base = 0.25, 4, 1.0, 2.0
    loss, per_head = cascade_loss(logits, y, T, B, gamma, base)
    expected = []
    for k in range(3):
        m = [sum(P[j][i] for j in range(k + 1)) / (k + 1) for i in range(4)]
        b = [min(int(v * B), B - 1) for v in m]
        w = [base + gamma * b.count(b[i]) / 4 for i in range(4)]
        l = [-math.log(P[k][i]) for i in range(4)]
        expected.append(T * sum(l) / 4 + (1 - T) * sum(wi * li for wi, li in zip(w, l)) / 4)
    # by hand, head 2: m = (.8, .2, .4, .325) -> bins 3, 0, 1, 1 -> w = 2.25, 2.25, 2.5, 2.5
    assert [float(v) for v in per_head] == pytest.approx(expected, rel=1e-5)
    assert float(loss) == pytest.approx(sum(expected), rel=1e-5)
    # head 3 alone would bin (.2, .95, .1, .4) -> 0, 3, 0, 1: a different loss than with the cascade
    alone = cascade_loss([logits[2]], y, T, B, gamma, base)[0]
    assert float(alone) != pytest.approx(expected[2], rel=1e-3)


def test_batch_mean_weighting_scales_each_heads_ce_by_its_mean_weight():
    """CADEL.WEIGHTING batch_mean (the CNN release): R_k = mean(w_k) * mean(l_k), not mean(w_k * l_k)."""
    y = torch.tensor([0, 1, 2, 3])
    P = [[0.9, 0.8, 0.6, 0.3]]
    logits = [logits_with_true_prob(p, y) for p in P]
    T, B, gamma, base = 0.25, 4, 1.0, 2.0
    l = [-math.log(v) for v in P[0]]
    b = [min(int(v * B), B - 1) for v in P[0]]  # bins 3, 3, 2, 1 -> w = 2.5, 2.5, 2.25, 2.25
    w = [base + gamma * b.count(b[i]) / 4 for i in range(4)]
    batch_mean = T * sum(l) / 4 + (1 - T) * (sum(w) / 4) * (sum(l) / 4)
    assert float(cascade_loss(logits, y, T, B, gamma, base, weighting="batch_mean")[0]) == pytest.approx(batch_mean)
    per_sample = float(cascade_loss(logits, y, T, B, gamma, base, weighting="per_sample")[0])
    assert per_sample == pytest.approx(T * sum(l) / 4 + (1 - T) * sum(a * c for a, c in zip(w, l)) / 4)
    assert per_sample != pytest.approx(batch_mean, rel=1e-3)
    assert cadel().weighting == "batch_mean" and cadel("CADEL.WEIGHTING", "per_sample").weighting == "per_sample"


def test_no_gradient_flows_through_the_weights():
    torch.manual_seed(0)
    y = torch.randint(0, 5, (16,))
    zs = [torch.randn(16, 5, requires_grad=True) for _ in range(3)]
    loss, _ = cascade_loss(zs, y, 0.3, 8, 2.0, 1.0)
    grads = torch.autograd.grad(loss, zs)
    # the same loss with the weights computed beforehand as constants
    const = []
    with torch.no_grad():
        ps = [F.softmax(z, 1).gather(1, y[:, None]).squeeze(1) for z in zs]
        for k in range(3):
            const.append(bin_weights(sum(ps[:k + 1]) / (k + 1), 8, 2.0, 1.0)[0])
    ref = sum(0.3 * F.cross_entropy(z, y) + 0.7 * (w * F.cross_entropy(z, y, reduction="none")).mean()
              for z, w in zip(zs, const))
    for g, r in zip(grads, torch.autograd.grad(ref, zs)):
        assert torch.allclose(g, r, atol=1e-6)


def test_sigmoid_terms_are_bce_summed_over_classes_and_sigmoid_true_class_probability():
    z = torch.tensor([[2.0, -1.0, 0.5]])
    y = torch.tensor([2])
    p, l = sigmoid_terms(z, y)
    s = torch.sigmoid(z[0])
    assert float(p) == pytest.approx(float(s[2]))
    assert float(l) == pytest.approx(float(-(torch.log(1 - s[0]) + torch.log(1 - s[1]) + torch.log(s[2]))), rel=1e-5)
    p, l = softmax_terms(z, y)
    assert float(l) == pytest.approx(float(F.cross_entropy(z, y)))


# ---------------------------------------------------------------- mixup
def test_mixup_loss_is_lam_la_plus_one_minus_lam_lb_with_separate_accumulators():
    m = cadel("CADEL.MIXUP_ALPHA", "0.5", "TRAIN.MAX_EPOCH", "5")
    m.train()
    x = torch.randn(6, 3, 28, 28)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    torch.manual_seed(7)
    batch = m.prepare_batch({"image": x, "label": y}, 2)
    torch.manual_seed(7)  # the same draws: lam ~ Beta(a, a), then the pairing
    lam = float(torch.distributions.Beta(torch.tensor(0.5), torch.tensor(0.5)).sample())
    perm = torch.randperm(6)
    assert batch["lam"] == pytest.approx(lam)
    assert torch.equal(batch["label_b"], y[perm])
    assert torch.allclose(batch["image"], lam * x + (1 - lam) * x[perm])
    out = [torch.randn(6, 5) for _ in range(3)]
    loss, _ = m.loss(out, batch, 2)
    T = 1 - 2 / 5
    la = cascade_loss(out, y, T, 8, 1.0, 2.0, weighting=m.weighting)[0]
    lb = cascade_loss(out, y[perm], T, 8, 1.0, 2.0, weighting=m.weighting)[0]
    assert float(loss) == pytest.approx(float(lam * la + (1 - lam) * lb), rel=1e-6)
    # no mixup at evaluation, or with alpha 0
    m.eval()
    assert "label_b" not in m.prepare_batch({"image": x, "label": y}, 2)
    assert "label_b" not in cadel().train().prepare_batch({"image": x, "label": y}, 2)


# ---------------------------------------------------------------- heads and network
def test_cosnorm_matches_its_formula():
    torch.manual_seed(1)
    head = CosNorm(6, 4, scale=30.0)
    f = torch.randn(3, 6) * torch.tensor([[0.1], [1.0], [7.0]])
    n = f.norm(dim=1, keepdim=True)
    x_hat = (n / (1 + n)) * f / n
    W = head.weight.detach()
    expected = 30.0 * x_hat @ (W / W.norm(dim=1, keepdim=True)).t()
    assert torch.allclose(head(f), expected, atol=1e-5)
    assert head.bias is None
    assert head.weight.abs().max() <= 1 / math.sqrt(6)  # W ~ U(±1/sqrt(d))


def test_aux_heads_follow_the_spec_block_and_the_places_variant_uses_a_3x3_projection():
    with torch.device("meta"):
        cnn = build_aux_head("cnn", 512, 1000)
        places = build_aux_head("places", 1024, 365)
        z = cnn(torch.empty(2, 512, 28, 28))
        zp = places(torch.empty(2, 1024, 14, 14))
    assert z.shape == (2, 1000) and zp.shape == (2, 365)
    b = cnn.body
    assert (b.block1.conv.in_channels, b.block1.conv.out_channels, b.block1.conv.padding) == (512, 2048, (1, 1))
    assert (b.block2.conv.groups, b.block2.conv.padding, b.block2.conv.kernel_size) == (32, (0, 0), (3, 3))
    assert (b.block3.conv.out_channels, b.block3.conv.padding) == (2048, (0, 0))
    assert (b.proj.conv.out_channels, b.proj.conv.kernel_size) == (4096, (1, 1))
    assert places.body.proj.conv.kernel_size == (3, 3) and places.body.proj.conv.padding == (0, 0)
    assert (cnn.se.fc1.in_features, cnn.se.fc1.out_features) == (4096, 512)
    assert cnn.dropout.p == 0.5 and isinstance(cnn.head, CosNorm) and cnn.head.scale == 30.0


@pytest.mark.parametrize("backbone,aux,taps_in", [("res50", "cnn", (512, 1024)), ("resnext50", "cnn", (512, 1024)),
                                                  ("res152", "places", (512, 1024))])
def test_imagenet_backbones_carry_three_heads_at_layer2_layer3_and_the_pooled_feature(backbone, aux, taps_in):
    cfg = build_config("", ["METHOD", "cadel", "BACKBONE.TYPE", backbone, "CADEL.AUX_HEAD", aux])
    with torch.device("meta"):  # shapes only: the real ResNet-50 + aux heads have ~155 M parameters
        m = build_method(cfg, [100] * 7)
        out = m({"image": torch.empty(2, 3, 224, 224)})
    assert m.net.taps == ["layer2", "layer3"]  # the default: last-but-two and last-but-one stages
    assert [a.body.block1.conv.in_channels for a in m.net.aux_heads] == list(taps_in)
    assert [tuple(z.shape) for z in out] == [(2, 7)] * 3
    assert m.net.last_head.weight.shape == (7, 2048) and m.net.last_head.scale == 30.0
    assert [h.weight.shape[1] for h in m.classifier_heads()] == [4096, 4096, 2048]


def test_res32_heads_tap_layer1_and_layer2_and_forward_a_tiny_image():
    m = cadel()
    assert m.net.taps == ["layer1", "layer2"]
    assert [a.body.block1.conv.out_channels for a in m.net.aux_heads] == [64, 64]  # width = feature width
    m.eval()
    out = m({"image": torch.randn(2, 3, 28, 28)})
    assert [tuple(z.shape) for z in out] == [(2, 5)] * 3
    pred = m.predict(out)
    assert torch.equal(pred["logits"], out[-1])
    assert list(pred["members"]) == ["head1", "head2", "head3", "mean_of_heads"]
    assert torch.allclose(pred["members"]["mean_of_heads"], torch.stack(out).mean(0))
    mean = cadel("CADEL.HEADLINE", "mean").predict(out)
    assert torch.allclose(mean["logits"], torch.stack(out).mean(0))
    assert list(mean["members"]) == ["head1", "head2", "head3", "last_head"]


def test_param_groups_are_one_per_network_and_backbone_lr_zero_freezes_it_while_bn_statistics_move():
    m = cadel("CADEL.BACKBONE_LR_SCALE", "0.5")
    assert [(g["name"], g["lr_scale"]) for g in m.param_groups()] == [
        ("backbone", 0.5), ("head1", 1.0), ("head2", 1.0), ("head3", 1.0)]
    m = cadel("CADEL.BACKBONE_LR_SCALE", "0")
    assert not any(p.requires_grad for p in m.net.backbone.parameters())
    assert all(p.requires_grad for p in m.net.aux_heads.parameters())
    bn = m.net.backbone.stem.bn1
    before = bn.running_mean.clone()
    m.train()
    m({"image": torch.randn(4, 3, 28, 28)})
    assert not torch.equal(before, bn.running_mean)  # as released: LR 0, BN in train mode
    m = cadel("CADEL.BACKBONE_LR_SCALE", "0", "BACKBONE.BN_EVAL", "True")
    m.train()
    before = m.net.backbone.stem.bn1.running_mean.clone()
    m({"image": torch.randn(4, 3, 28, 28)})
    assert torch.equal(before, m.net.backbone.stem.bn1.running_mean)


def test_taps_are_checked_by_name():
    with pytest.raises(UserError, match="'layer4' is not a stage of this backbone; valid: stem, layer1"):
        cadel("CADEL.TAPS", '["layer2", "layer4"]')
    with pytest.raises(UserError, match="shallow to deep"):
        cadel("CADEL.TAPS", '["layer2", "layer1"]')
    assert cadel("CADEL.TAPS", '["layer2"]').net.num_heads == 2


def test_a_pretrained_file_with_no_matching_key_is_a_one_line_error(tmp_path):
    path = tmp_path / "unrelated.pth"
    torch.save({"encoder.blocks.0.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(UserError) as e:
        cadel("BACKBONE.PRETRAINED_MODEL", str(path))
    assert "\n" not in str(e.value) and str(path) in str(e.value) and "no key matches" in str(e.value)
    # keys whose shapes match are kept, the others skipped (the release's rule for Places-LT)
    src = cadel().net.backbone.state_dict()
    src["stem.conv1.weight"] = torch.zeros(16, 3, 5, 5)
    part = tmp_path / "partial.pth"
    torch.save({"state_dict": {k: v for k, v in src.items()}}, part)
    m = cadel("BACKBONE.PRETRAINED_MODEL", str(part))
    assert torch.equal(m.net.backbone.layer3[0].conv1.weight, src["layer3.0.conv1.weight"])


# ---------------------------------------------------------------- stage two: tau search
def _tau_example():
    """Two classes, counts 100 / 10: log(pi_0 / pi_1) = log 10, so z_1 - z_0 + tau log 10 decides.
    Class-1 samples with margin -1.5 need tau > 0.65; class-0 samples with margin -3 need tau < 1.30."""
    counts = [100, 10]
    margins = torch.tensor([-1.5, -1.5, -3.0, -3.0])
    logits = torch.stack([torch.zeros(4), margins], 1)
    labels = torch.tensor([1, 1, 0, 0])
    return counts, logits, labels


def test_tau_search_picks_the_tau_that_maximises_validation_accuracy():
    counts, logits, labels = _tau_example()
    tau, accs = tau_search.select_tau(logits, labels, counts, [0.0, 0.5, 1.0, 1.5, 2.0])
    assert tau == 1.0 and accs == [50.0, 50.0, 100.0, 50.0, 50.0]
    tau, _ = tau_search.select_tau(logits, labels, counts, [0.0, 0.5, 0.6])  # ties: first in grid order
    assert tau == 0.0


def test_tau_choice_is_unchanged_when_the_test_labels_are_shuffled():
    counts, val_logits, val_labels = _tau_example()
    preds = {"main": val_logits, "mean_of_heads": val_logits * 0.5}
    torch.manual_seed(3)
    test_logits = {k: torch.randn(50, 2) for k in preds}
    test_labels = torch.randint(0, 2, (50,))
    taus = [0.0, 0.5, 1.0, 1.5, 2.0]
    chosen, table, report = tau_search.posthoc_logit_adjustment(preds, val_labels, test_logits, test_labels, counts, taus)
    shuffled = test_labels[torch.randperm(50)]
    chosen2, table2, report2 = tau_search.posthoc_logit_adjustment(preds, val_labels, test_logits, shuffled, counts,
                                                                   taus)
    assert chosen == chosen2 == {"main": 1.0, "mean_of_heads": 0.5} and table == table2
    assert list(report["members"]) == ["mean_of_heads"] and "unadjusted" in report


# ---------------------------------------------------------------- release config
RELEASE_R50 = """
coslr: true
endlr: 0.0
criterions:
  PerformanceLoss:
    def_file: ./loss/SoftmaxLoss.py
    loss_params: {}
    optim_params: null
    weight: 1.0
  mixup:
    alpha: 0.5
last: false
memory:
  centroids: false
  init_centroids: false
model_dir: null
networks:
  classifier:
    def_file: ./models/CosNormClassifier.py
    fix: false
    optim_params: {lr: 0.025, momentum: 0.9, weight_decay: 0.0005}
    params: {dataset: ImageNet_LT, feat_dim: 2048, num_classes: 1000, scale: 30, normalized: true}
  feat_model:
    def_file: ./models/ResNet50Feature_Ensemble.py
    fix: false
    optim_params: {lr: 0.025, momentum: 0.9, weight_decay: 0.0005}
    params: {dataset: ImageNet_LT, dropout: null, stage1_weights: false, use_fc: false}
shuffle: false
training_opt:
  backbone: resnet50
  batch_size: 128
  dataset: ImageNet_LT
  display_step: 10
  feature_dim: 2048
  log_dir: ./logs/ImageNet_LT/models/resnet50_stage1
  num_classes: 1000
  num_epochs: 200
  num_workers: 12
  open_threshold: 0.1
  sampler: null
  bins: 8
  gamma: 1
  base_weight: 2
  num_dir: ./data/ImageNet_LT/num_shots.npz
  step1: 160
  step2: 180
  tempture: 1
"""


def test_converter_maps_a_release_resnet50_yaml_and_lists_what_it_drops(tmp_path, capsys):
    conv_tool = load_tool("convert_cadel_config")
    src = tmp_path / "resnet50_stage1.yaml"
    src.write_text(RELEASE_R50)
    out = tmp_path / "ours.yaml"
    conv = conv_tool.main([str(src), "--out", str(out)])
    cfg = build_config(str(out))
    assert (cfg.METHOD, cfg.NAME, cfg.BACKBONE.TYPE) == ("cadel", "resnet50_stage1", "res50")
    assert (cfg.TRAIN.BATCH_SIZE, cfg.TRAIN.MAX_EPOCH, cfg.TRAIN.NUM_WORKERS) == (128, 200, 12)
    o = cfg.TRAIN.OPTIMIZER
    assert (o.TYPE, o.BASE_LR, o.MOMENTUM, o.WEIGHT_DECAY, o.NESTEROV) == ("SGD", 0.025, 0.9, 5e-4, False)
    s = cfg.TRAIN.LR_SCHEDULER
    assert (s.TYPE, s.ETA_MIN, s.STEP_AT_EPOCH_START, s.COSINE_DECAY_END) == ("cosine", 0.0, False, 0)
    c = cfg.CADEL
    assert (c.BINS, c.GAMMA, c.BASE_WEIGHT, c.MIXUP_ALPHA, c.SCALE, c.BACKBONE_LR_SCALE) == (8, 1.0, 2.0, 0.5, 30.0, 1.0)
    assert list(c.TAPS) == ["layer2", "layer3"] and c.AUX_HEAD == "cnn" and c.HEADLINE == "last"
    assert cfg.DATASET.TEST_JSON == "data/ImageNet_LT/ImageNet_LT_test.json" and cfg.DATASET.NUM_CLASSES == 1000
    assert "color_jitter" in cfg.TRANSFORMS.TRAIN_TRANSFORMS and cfg.INPUT_SIZE == (224, 224)
    dropped = dict(conv.dropped)
    for key in ("training_opt.num_dir", "memory", "shuffle", "training_opt.step1", "training_opt.tempture",
                "criterions.PerformanceLoss", "networks.classifier.params.normalized"):
        assert key in dropped, key
    assert "--num-shots" in dropped["training_opt.num_dir"]
    err = capsys.readouterr().err
    assert "dropped: memory:" in err and "# dropped: shuffle:" in out.read_text()


def test_converter_maps_places_backbone_lr_zero_and_checks_num_shots(tmp_path, tiny_lt, capsys):
    conv_tool = load_tool("convert_cadel_config")
    rel = yaml.safe_load(RELEASE_R50)
    rel["training_opt"].update(dataset="Places_LT", num_classes=365, num_epochs=30, gamma=2, base_weight=1)
    rel["networks"]["feat_model"].update(def_file="./models/ResNet152Feature.py",
                                         optim_params={"lr": 0.0, "momentum": 0.9, "weight_decay": 0.0005})
    rel["networks"]["classifier"]["params"]["num_classes"] = 365
    conv = conv_tool.convert(rel)
    assert conv.get("BACKBONE.TYPE") == "res152" and conv.get("CADEL.AUX_HEAD") == "places"
    assert conv.get("CADEL.BACKBONE_LR_SCALE") == 0.0 and conv.get("TRAIN.OPTIMIZER.BASE_LR") == 0.025
    assert conv.get("CADEL.POSTHOC_TAUS") == [0.9, 1.0, 1.1, 1.2, 1.3, 1.4]
    # num_shots.npz: agreeing counts pass, a differing one is a one-line error naming the class
    anns = json.loads(open(tiny_lt["train"]).read())["annotations"]
    counts = np.bincount([a["category_id"] for a in anns], minlength=10)
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    np.savez(good, num_shots=counts)
    bad_counts = counts.copy()
    bad_counts[3] += 1
    np.savez(bad, bad_counts)
    assert conv_tool.check_num_shots(str(good), str(tiny_lt["train"])) == 10
    src = tmp_path / "r.yaml"
    src.write_text(RELEASE_R50)
    with pytest.raises(SystemExit) as e:
        conv_tool.main([str(src), "--num-shots", str(bad), "--train-json", str(tiny_lt["train"])])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "class 3: npz" in err[0]


# ---------------------------------------------------------------- end to end on the CPU
TINY_OPTS = ["METHOD", "cadel", "CADEL.MIXUP_ALPHA", "0.5", "TRAIN.MAX_EPOCH", "2", "SHOW_STEP", "1",
             "TRAIN.NUM_WORKERS", "2", "DETERMINISTIC", "True", "TRAIN.LR_SCHEDULER.TYPE", "cosine",
             "TRAIN.LR_SCHEDULER.STEP_AT_EPOCH_START", "False", "CADEL.POSTHOC_TAUS", "[0.0, 1.0, 2.0]"]


@pytest.mark.slow
def test_cpu_launcher_run_then_valid_and_posthoc_report_every_head(tiny_cfg):
    # kill / resume: tests/methods/test_every_method.py
    out = os.path.join(os.path.dirname(tiny_cfg), "out")
    r = run_cli(["bash", "data_parallel_train.sh", str(tiny_cfg), "cpu", "NAME", "killed", *TINY_OPTS])
    assert r.returncode == 0, r.stderr[-2000:]

    r = run_cli([PY, "valid.py", str(tiny_cfg), "NAME", "killed", *TINY_OPTS])
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [ln.split("|")[1].strip() for ln in r.stdout.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert rows == ["prediction", "main (last head)", "head1", "head2", "head3", "mean_of_heads"]

    r = run_cli([PY, "tools/posthoc_tau.py", str(tiny_cfg), "NAME", "killed", *TINY_OPTS])
    assert r.returncode == 0, r.stderr[-2000:]
    folder = os.path.join(out, "killed", "posthoc_tau")
    for f in ("tau_table.csv", "tau_table.md", "results.json", "per_class.csv", "per_class_accuracy.png",
              "confusion_matrix.png"):
        assert os.path.isfile(os.path.join(folder, f)), f
    res = json.load(open(os.path.join(folder, "results.json")))
    assert res["split"] == "test" and res["selection_split"] == "valid" and res["tau_grid"] == [0.0, 1.0, 2.0]
    assert set(res["tau"]) == {"main", "head1", "head2", "head3", "mean_of_heads"}
    assert set(res["members"]) == {"head1", "head2", "head3", "mean_of_heads"}
    csv_lines = open(os.path.join(folder, "tau_table.csv")).read().splitlines()
    assert csv_lines[0] == "tau,val_top1_main,val_top1_head1,val_top1_head2,val_top1_head3,val_top1_mean_of_heads"
    assert len(csv_lines) == 5 and csv_lines[-1].startswith("chosen,")
    # without TEST_JSON (iNat) the report is on VALID_JSON, and the tool says so
    r = run_cli([PY, "tools/posthoc_tau.py", str(tiny_cfg), "--out", os.path.join(out, "noval"), "NAME", "killed",
                 *TINY_OPTS, "DATASET.TEST_JSON", ""])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "chosen AND reported on VALID_JSON" in r.stdout
    assert json.load(open(os.path.join(out, "noval", "results.json")))["selection_is_report_split"] is True


@pytest.mark.parametrize("path", ["configs/fashion_mnist_lt/cadel_res32.yaml", "configs/imagenet_lt/cadel_res50.yaml",
                                  "configs/imagenet_lt/cadel_resnext50.yaml", "configs/inat18/cadel_res50.yaml",
                                  "configs/places_lt/cadel_res152.yaml", "configs/cifar100_lt/cadel_if100.yaml",
                                  "configs/cifar10_lt/cadel_if100.yaml"])
def test_every_cadel_config_builds(path):
    cfg = build_config(os.path.join(ROOT, path))
    assert cfg.METHOD == "cadel" and cfg.TRAIN.LR_SCHEDULER.TYPE == "cosine"
    assert not cfg.TRAIN.LR_SCHEDULER.STEP_AT_EPOCH_START  # PyTorch's CosineAnnealingLR, stepped after the epoch

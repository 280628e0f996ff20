"""ACE (docs/methods/ace.md): split planner, shared-trunk experts on every backbone, complementary loss and
stop-gradient routing, per-expert learning rates, mixup then un-mixed epochs, weight-norm aggregation,
n/a for empty shot groups, the release's YAMLs, K = 4, and the launcher's kill / --ar resume."""
import json
import os

import pytest
import torch

from conftest import PY, release_fixture, run_cli
from lib.config import build_config, notices
from lib.data.build import DataSplits, train_loader
from lib.data.longtail import exponential_counts
from lib.engine.amp import AmpContext
from lib.engine.optim import LRSchedule, build_optimizer
from lib.engine.trainer import train, train_step
from lib.evaluation.evaluator import evaluate
from lib.evaluation.metrics import format_groups
from lib.evaluation.reports import summary_table, write_evaluation
from lib.methods import build_method
from lib.methods.ace import aggregate, expert_loss_terms, plan_expert_splits, tail_shares
from lib.utils.errors import UserError

C10_IF100 = exponential_counts(5000, 100, 10)  # CIFAR-10-LT IF100: 8 many / 2 medium / 0 few classes

ACE_TINY = """# ACE on tests/conftest.py's tiny Fashion-MNIST-LT (counts 60 ... 6)
NAME: tiny_ace
OUTPUT_DIR: {out}
METHOD: ace
INPUT_SIZE: (28, 28)
SAVE_STEP: 0
SHOW_STEP: 0
DATASET:
  TRAIN_JSON: {train}
  VALID_JSON: {val}
  TEST_JSON: {test}
BACKBONE:
  TYPE: res32_cifar
TRAIN:
  BATCH_SIZE: 32
  MAX_EPOCH: 2
  UNMIX_EPOCH: 1
  NUM_WORKERS: 0
  COMBINER:
    TYPE: mix_up_group
    ALPHA: 0.3
  OPTIMIZER:
    EXPERT: [0.4, 0.1]
    BASE_LR: 0.05
    WEIGHT_DECAY: 5e-4
  LR_SCHEDULER:
    TYPE: warmup
    WARM_EPOCH: 1
    LR_STEP: [3]
TEST:
  BATCH_SIZE: 100
  NUM_WORKERS: 0
TRANSFORMS:
  TRAIN_TRANSFORMS: ("random_crop", "random_horizontal_flip")
  TEST_TRANSFORMS: ()
  NORMALIZE: fashion_mnist
"""


def ace_method(*opts, counts=C10_IF100, thresholds="[0.3, 0.05]"):
    cfg = build_config("", ["METHOD", "ace", "TRAIN.OPTIMIZER.EXPERT", thresholds, *opts])
    return build_method(cfg, list(counts))


def tiny_ace_cfg(tiny_lt, tmp_path, name="ace.yaml"):
    path = tmp_path / name
    path.write_text(ACE_TINY.format(out=tmp_path / "out", train=tiny_lt["train"], val=tiny_lt["val"],
                                    test=tiny_lt["test"]))
    return path


def images(n, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g)


# ---------------------------------------------------------------- split planner
@pytest.mark.parametrize("profile, thresholds, bounds, sizes, shares", [
    ((500, 100, 100), [0.3, 0.03], (25, 68), (25, 43, 32), (0.304, 0.032)),  # CIFAR-100-LT IF100
    ((500, 50, 100), [0.4, 0.1], (22, 53), (22, 31, 47), (0.406, 0.104)),  # CIFAR-100-LT IF50
    ((5000, 100, 10), [0.3, 0.05], (2, 5), (2, 3, 5), (0.355, 0.072)),  # CIFAR-10-LT IF100
    ((5000, 50, 10), [0.3, 0.05], (2, 6), (2, 4, 4), (0.412, 0.061)),  # CIFAR-10-LT IF50
])
def test_planner_reproduces_the_worked_splits(profile, thresholds, bounds, sizes, shares):
    counts = exponential_counts(*profile)
    s = plan_expert_splits(counts, thresholds)
    assert s.boundaries == (0,) + bounds
    b1, b2 = bounds
    assert (b1, b2 - b1, len(counts) - b2) == sizes
    assert s.data_shares[0] == 1.0
    assert s.data_shares[1:] == pytest.approx(shares, abs=1e-3)
    assert list(s.target_classes(1)) == list(range(b1, len(counts)))
    assert list(s.interfering_classes(2)) == list(range(b2))
    # the defining inequality r_b > s >= r_{b+1} at each boundary
    r = tail_shares(counts)
    assert all(r[b] > t >= r[b + 1] for b, t in zip(bounds, thresholds))


def test_planner_boundary_classes_of_cifar100_if100_have_the_spec_counts():
    counts = exponential_counts(500, 100, 100)
    assert (counts[24], counts[25], counts[67], counts[68]) == (163, 156, 22, 21)


def test_planner_refuses_empty_groups_and_malformed_thresholds():
    with pytest.raises(UserError, match=r"TRAIN.OPTIMIZER.EXPERT \[0.3, 0.25\] gives split boundaries b = \[2, 2\]"):
        plan_expert_splits(C10_IF100, [0.3, 0.25])  # experts 2 and 3 would share one boundary: empty group
    with pytest.raises(UserError, match=r"b = \[0, 5\]"):
        plan_expert_splits(C10_IF100, [0.99, 0.05])  # expert 2 would have no interfering class
    with pytest.raises(UserError, match="strictly decreasing values in \\(0, 1\\)"):
        plan_expert_splits(C10_IF100, [0.05, 0.3])
    with pytest.raises(UserError, match="ACE.THRESHOLDS is empty"):
        plan_expert_splits(C10_IF100, [], key="ACE.THRESHOLDS")
    with pytest.raises(UserError, match="needs 3"):
        ace_method("ACE.NUM_EXPERTS", "4")  # 2 thresholds for 4 experts
    with pytest.raises(UserError, match="DATASET.REORDER_CLASSES"):
        plan_expert_splits([10, 50, 5], [0.5, 0.1])


def test_unsorted_classes_are_ranked_by_default_and_refused_when_reordering_is_off(tiny_lt, tmp_path):
    # the tiny training set with its class ids reversed: counts 6 ... 60 (increasing)
    data = json.loads(open(tiny_lt["train"]).read())
    for a in data["annotations"]:
        a["category_id"] = 9 - a["category_id"]
        a["fpath"] = os.path.join(os.path.dirname(tiny_lt["train"]), a["fpath"])
    rev = tmp_path / "reversed_train.json"
    rev.write_text(json.dumps(data))
    opts = ["METHOD", "ace", "DATASET.TRAIN_JSON", str(rev), "TRAIN.OPTIMIZER.EXPERT", "[0.4, 0.1]"]
    cfg = build_config("", opts)
    assert cfg.DATASET.REORDER_CLASSES and any("DATASET.REORDER_CLASSES True" in n for n in notices(cfg))
    splits = DataSplits(cfg, need_train=False)
    assert splits.counts == sorted(splits.counts, reverse=True)
    assert splits.label_map == list(range(9, -1, -1))
    assert build_method(cfg, splits.counts).splits.boundaries == (0, 3, 6)
    off = build_config("", opts + ["DATASET.REORDER_CLASSES", "False"])
    assert not off.DATASET.REORDER_CLASSES  # an explicit False is kept ...
    with pytest.raises(UserError, match="set DATASET.REORDER_CLASSES True"):  # ... and refused on unsorted counts
        build_method(off, DataSplits(off, need_train=False).counts)


# ---------------------------------------------------------------- network
@pytest.mark.parametrize("backbone, trunk, branch, in_dim, forward_size", [
    ("res32_cifar", ("stem", "layer1", "layer2"), "layer3", 64, 32),
    ("res10", ("stem", "layer1", "layer2", "layer3"), "layer4", 512, 64),
    ("res50", ("stem", "layer1", "layer2", "layer3"), "layer4", 2048, None),
    ("res152", ("stem", "layer1", "layer2", "layer3"), "layer4", 2048, None),
    ("resnext50", ("stem", "layer1", "layer2", "layer3"), "layer4", 2048, None),
])
def test_every_backbone_shares_all_stages_but_the_last_and_copies_it_per_expert(backbone, trunk, branch, in_dim,
                                                                                forward_size):
    torch.manual_seed(0)
    m = ace_method("BACKBONE.TYPE", backbone)
    net = m.net
    assert net.trunk_stage_names == trunk and net.branch_stage_name == branch
    assert len(net.branches) == len(net.heads) == 3
    assert [type(h).__name__ for h in net.heads] == ["LWS"] * 3 and net.heads[0].weight.shape == (10, in_dim)
    assert all(p.requires_grad for h in net.heads for p in h.parameters())  # W, b and sigma all train
    b1, b2 = (dict(b.named_parameters()) for b in net.branches[:2])
    assert {k: v.shape for k, v in b1.items()} == {k: v.shape for k, v in b2.items()}
    conv = next(k for k in b1 if k.endswith("conv1.weight"))
    assert not torch.equal(b1[conv], b2[conv])  # experts are initialised independently
    assert b1[conv].data_ptr() != b2[conv].data_ptr()
    if forward_size:
        out = m({"image": images(2, forward_size)})
        assert [tuple(z.shape) for z in out] == [(2, 10)] * 3


def test_a_backbone_without_resnet_stages_is_refused_in_one_line():
    pytest.importorskip("timm")
    with pytest.raises(UserError, match="METHOD ace needs a ResNet backbone .* got BACKBONE.TYPE 'vit_tiny_p4'"):
        ace_method("BACKBONE.TYPE", "vit_tiny_p4", "INPUT_SIZE", "(32, 32)")


def test_experts_can_start_as_copies_of_expert_one():
    m = ace_method("ACE.REINIT_EXPERTS", "False")
    for (k, a), (_, b) in zip(m.net.branches[0].named_parameters(), m.net.branches[2].named_parameters()):
        assert torch.equal(a, b), k


# ---------------------------------------------------------------- losses and routing
def test_losses_of_experts_two_and_three_leave_every_trunk_gradient_zero_and_expert_one_reaches_it():
    torch.manual_seed(0)
    m = ace_method()
    m.train()
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 5])
    out = m({"image": images(len(y))})
    terms = m.expert_losses(out, y)
    sum(ce + comp for ce, comp in terms[1:]).backward()
    for name, p in m.net.trunk.named_parameters():
        assert p.grad is None or not p.grad.any(), name
    for mod in m.net.expert_modules(0):
        assert all(p.grad is None for p in mod.parameters())
    for k in (1, 2):
        assert all(p.grad is not None and p.grad.any() for p in m.net.heads[k].parameters())
        assert any(p.grad is not None and p.grad.any() for p in m.net.branches[k].parameters())

    m.zero_grad(set_to_none=True)
    out = m({"image": images(len(y))})
    sum(m.expert_losses(out, y)[0]).backward()
    assert all(p.grad is not None for p in m.net.trunk.parameters())
    assert sum(float(p.grad.abs().sum()) for p in m.net.trunk.parameters()) > 0
    for k in (1, 2):
        assert all(p.grad is None for mod in m.net.expert_modules(k) for p in mod.parameters())


def test_complementary_term_is_zero_for_zero_interfering_logits_and_the_scaled_frobenius_norm_otherwise():
    y = torch.tensor([3, 4, 0, 1])  # target classes of an expert with boundary 2 are 2..4: S = samples 0, 1
    z = torch.zeros(4, 5)
    z[:, 2:] = torch.tensor([[1.0, 2.0, 3.0]] * 4)
    z[2:, :2] = 7.0  # interfering logits of samples outside S do not count
    z.requires_grad_(True)
    ce, comp = expert_loss_terms(z, y, 2)
    assert float(comp) == 0.0
    comp.backward()
    assert torch.isfinite(z.grad).all() and not z.grad.any()
    ce_ref = torch.nn.functional.cross_entropy(z.detach()[:2], y[:2])
    assert float(ce) == pytest.approx(float(ce_ref))

    z2 = z.detach().clone()
    z2[0, :2] = torch.tensor([3.0, 4.0])  # ||[[3, 4], [0, 0]]||_F / 2 = 2.5
    _, comp = expert_loss_terms(z2, y, 2)
    assert float(comp) == pytest.approx(2.5)
    assert [float(t) for t in expert_loss_terms(z2, torch.tensor([0, 1, 0, 1]), 2)] == [0.0, 0.0]  # S empty


def test_loss_is_float32_and_finite_under_autocast_even_for_large_half_logits():
    m = ace_method()
    big = [torch.full((128, 10), 120.0, dtype=torch.float16) for _ in range(3)]  # Σz² overflows float16
    terms = m.expert_losses(big, torch.arange(128) % 10)
    assert all(t.dtype == torch.float32 and torch.isfinite(t) for pair in terms for t in pair)
    m.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        batch = {"image": images(8), "label": torch.arange(8)}
        loss, _ = m.loss(m(batch), batch, 1)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


# ---------------------------------------------------------------- aggregation
def set_rows(head, norms):
    """Head weight rows e_0 * norm_c, bias 0, sigma 1."""
    with torch.no_grad():
        head.weight.zero_()
        head.weight[:, 0] = torch.tensor(norms)
        head.bias.zero_()
        head.scales.fill_(1.0)


def test_aggregation_equals_a_hand_computed_three_expert_example():
    # counts 100, 50, 20, 5 with thresholds [0.3, 0.02]: b = (1, 3); E2 covers classes 1-3, E3 class 3
    m = ace_method(counts=(100, 50, 20, 5), thresholds="[0.3, 0.02]")
    assert m.splits.boundaries == (0, 1, 3)
    set_rows(m.net.heads[0], [2.0, 2.0, 2.0, 2.0])  # w1 = 2
    set_rows(m.net.heads[1], [9.0, 1.0, 1.0, 1.0])  # w2 = mean over classes 1..3 = 1 -> m = 2 (row 0 ignored)
    set_rows(m.net.heads[2], [9.0, 9.0, 9.0, 4.0])  # w3 = 4 (class 3 only) -> f = 0.5
    z1 = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    z2 = torch.tensor([[10.0, 1.0, 2.0, 3.0]])
    z3 = torch.tensor([[10.0, 10.0, 10.0, 6.0]])
    out = m.predict([z1, z2, z3])
    expected = [1.0, (2 + 2 * 1) / 2, (3 + 2 * 2) / 2, (4 + 2 * 3 + 0.5 * 6) / 3]
    assert out["logits"][0].tolist() == pytest.approx(expected)
    assert set(out["members"]) == {"expert1", "expert2", "expert3"} and torch.equal(out["members"]["expert3"], z3)
    # sigma is ignored by default (the release); ACE.NORM_WITH_SCALES counts |sigma_c| * ||W[c]||
    with torch.no_grad():
        m.net.heads[1].scales.fill_(2.0)
    assert m.predict([z1, z2, z3])["logits"][0].tolist() == pytest.approx(expected)
    m.norm_with_scales = True
    assert m.aggregation_factors().tolist() == pytest.approx([1.0, 1.0, 0.5])


def test_plain_aggregation_averages_the_covering_experts_without_rescaling():
    m = ace_method("ACE.AGGREGATION", "plain", counts=(100, 50, 20, 5), thresholds="[0.3, 0.02]")
    set_rows(m.net.heads[0], [2.0, 2.0, 2.0, 2.0])
    set_rows(m.net.heads[1], [9.0, 1.0, 1.0, 1.0])
    set_rows(m.net.heads[2], [9.0, 9.0, 9.0, 4.0])
    z1, z2, z3 = torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([[10.0, 1.0, 2.0, 3.0]]), torch.full((1, 4), 6.0)
    assert m.aggregation_factors().tolist() == [1.0, 1.0, 1.0] and m.prediction_name == "plain aggregate"
    assert m.predict([z1, z2, z3])["logits"][0].tolist() == pytest.approx([1.0, 1.5, 2.5, (4 + 3 + 6) / 3])
    with pytest.raises(UserError, match="unknown ACE.AGGREGATION 'mean'; valid: weight_norm, plain"):
        ace_method("ACE.AGGREGATION", "mean")


def test_aggregate_averages_over_the_experts_covering_each_class_for_four_experts():
    cover = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)
    zs = [torch.full((1, 4), float(k + 1)) for k in range(4)]  # z_k = k + 1 everywhere
    score = aggregate(zs, torch.tensor([1.0, 1.0, 2.0, 1.0]), cover)
    assert score[0].tolist() == pytest.approx([1.0, 1.5, (1 + 2 + 6) / 3, (1 + 2 + 6 + 4) / 4])


# ---------------------------------------------------------------- learning rates
def lr_setup(rule, *opts):
    cfg = build_config("", ["METHOD", "ace", "TRAIN.OPTIMIZER.EXPERT", "[0.3, 0.05]", "ACE.LR_SCALE", rule,
                            "TRAIN.OPTIMIZER.BASE_LR", "0.1", "TRAIN.LR_SCHEDULER.TYPE", "warmup",
                            "TRAIN.LR_SCHEDULER.WARM_EPOCH", "3", "TRAIN.LR_SCHEDULER.LR_STEP", "[5]",
                            "TRAIN.MAX_EPOCH", "6", *opts])
    m = build_method(cfg, C10_IF100)
    opt = build_optimizer(cfg, m)
    return m, opt, LRSchedule(cfg, opt, m.epochs)


def schedule_factor(e):
    w = (1 / 3) * (1 - e / 3) + e / 3 if e < 3 else 1.0
    return w * (0.1 if e >= 5 else 1.0)


@pytest.mark.parametrize("rule, scales", [
    ("data_share", (1.0, 4409 / 12406, 891 / 12406)),  # r_2, r_5 of CIFAR-10-LT IF100
    ("threshold", (1.0, 0.3, 0.05)),
    ("none", (1.0, 1.0, 1.0)),
])
def test_per_expert_learning_rates_follow_the_rule_through_warmup_and_decay(rule, scales):
    m, opt, sch = lr_setup(rule)
    assert [g["name"] for g in opt.param_groups] == ["trunk_expert1", "expert2", "expert3"]
    trunk = {id(p) for p in m.net.trunk.parameters()}
    assert trunk <= {id(p) for p in opt.param_groups[0]["params"]}
    for e in range(1, 7):  # warmup epochs 1-2, full LR 3-4, x0.1 from 5
        sch.set_epoch(e)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1 * schedule_factor(e) * s for s in scales])


def test_batch_share_sets_each_expert_lr_to_its_share_of_the_batch_every_step():
    m, opt, sch = lr_setup("batch_share", "TRAIN.COMBINER.TYPE", "mix_up_group", "TRAIN.COMBINER.ALPHA", "0.3")
    m.train()
    y = torch.tensor([0, 1, 2, 3, 5, 6, 9, 9])  # 6 of 8 in TC_2 = [2, 10), 4 of 8 in TC_3 = [5, 10)
    sch.set_epoch(2)
    sch.step(2, 0, 10, m.lr_scales({"label": y}))
    f = 0.1 * schedule_factor(2)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([f, f * 6 / 8, f * 4 / 8])
    yb = torch.tensor([0, 0, 0, 0, 0, 0, 0, 9])  # mixed batch: lam * share(y_a) + (1 - lam) * share(y_b)
    sch.step(2, 1, 10, m.lr_scales({"label": y, "label_b": yb, "lam": 0.25}))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx(
        [f, f * (0.25 * 6 + 0.75 * 1) / 8, f * (0.25 * 4 + 0.75 * 1) / 8])
    sch.set_epoch(5)  # the LR step keeps the last per-step scales
    assert opt.param_groups[2]["lr"] == pytest.approx(0.1 * 0.1 * (0.25 * 4 + 0.75 * 1) / 8)


# ---------------------------------------------------------------- mixup phase
def test_mixup_switches_off_at_max_epoch_as_released_and_the_run_lasts_max_plus_unmix_epochs():
    m = ace_method("TRAIN.COMBINER.TYPE", "mix_up_group", "TRAIN.COMBINER.ALPHA", "0.3", "TRAIN.MAX_EPOCH", "4",
                   "TRAIN.UNMIX_EPOCH", "2")
    assert m.epochs == 6
    m.train()
    batch = {"image": images(6), "label": torch.tensor([0, 1, 2, 3, 4, 5])}
    for epoch in (1, 3):  # the release mixes while epoch < MAX_EPOCH
        mixed = m.prepare_batch(batch, epoch)
        assert "label_b" in mixed and not torch.equal(mixed["image"], batch["image"])
    for epoch in (4, 5, 6):
        assert m.prepare_batch(batch, epoch) is batch
    m.eval()
    assert m.prepare_batch(batch, 1) is batch  # never at evaluation
    # the mixed loss is lam * L(y_a) + (1 - lam) * L(y_b), each expert with its own subsets
    m.train()
    out, lam = m(mixed), mixed["lam"]
    lb = m.expert_losses(out, mixed["label_b"])
    la = m.expert_losses(out, mixed["label"])
    expected = sum(lam * (a[0] + a[1]) + (1 - lam) * (b[0] + b[1]) for a, b in zip(la, lb))
    assert float(m.loss(out, mixed, 4)[0]) == pytest.approx(float(expected), rel=1e-6)
    plain = ace_method("TRAIN.MAX_EPOCH", "4", "TRAIN.UNMIX_EPOCH", "2")  # combiner default: no mixup at all
    plain.train()
    assert plain.prepare_batch(batch, 1) is batch and plain.epochs == 6


# ---------------------------------------------------------------- reporting
def test_empty_shot_groups_are_na_for_the_aggregate_and_every_expert(tmp_path):
    m = ace_method()  # CIFAR-10-LT IF100 counts: no few-shot class
    m.eval()
    y = torch.arange(20) % 10
    loader = [{"image": images(20), "label": y, "index": torch.arange(20)}]
    report, logits, labels = evaluate(m, m, loader, torch.device("cpu"), C10_IF100)
    assert set(report["members"]) == {"expert1", "expert2", "expert3"}
    for r in [report] + list(report["members"].values()):
        assert r["few"] is None and r["many"] is not None and r["medium"] is not None
    table = summary_table(report)
    rows = [ln for ln in table.splitlines() if ln.startswith("| main") or ln.startswith("| expert")]
    assert len(rows) == 4 and all(ln.rstrip(" |").endswith("n/a") for ln in rows)
    assert "nan" not in table.lower().replace("n/a", "") and "few=n/a" in format_groups(report)
    results = write_evaluation(str(tmp_path), report, logits, labels, C10_IF100, {"name": "c10"})
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["few"] is None and all(v["few"] is None for v in saved["members"].values())
    assert results["members"]["expert2"]["few"] is None


# ---------------------------------------------------------------- the release's configs
RELEASES = {  # the release's CIFAR-100-LT IF100 (no mixup, warmup 0) and IF50 (mixup 0.3, warmup 10)
    "if100": dict(combiner="default", file="configs__cifar100_im100.yaml"),
    "if50": dict(combiner="mix_up_group", file="configs__cifar100_im50.yaml"),
}


@pytest.mark.parametrize("variant, bounds", [("if100", (3, 8)), ("if50", (3, 6))])
def test_a_release_yaml_with_only_its_paths_changed_is_recognised_translated_and_trains(tiny_lt, tmp_path, variant,
                                                                                       bounds):
    path = release_fixture(tmp_path, "ace", RELEASES[variant]["file"], OUTPUT_DIR=tmp_path / "out",
                           TRAIN_JSON=tiny_lt["train"], VALID_JSON=tiny_lt["val"])
    cfg = build_config(str(path))
    said = "\n".join(notices(cfg))
    assert cfg.METHOD == "ace" and "recognised an original ace release config" in said
    assert (cfg.BACKBONE.TYPE, cfg.LOSS.LOSS_TYPE, cfg.CLASSIFIER.TYPE) == ("res32_cifar", "CrossEntropy", "LWS")
    assert cfg.DATASET.REORDER_CLASSES
    for words in ("res32_cifar_group -> res32_cifar", "ResCELoss", "SGD_group", "TEST.PRED_FILE"):
        assert words in said
    assert cfg.TRAIN.COMBINER.TYPE == RELEASES[variant]["combiner"]
    assert cfg.TRAIN.DROP_LAST and "TRAIN.DROP_LAST True: as the release" in said
    saved = tmp_path / "saved.yaml"  # the adapted config, saved and built again, is unchanged
    saved.write_text(cfg.dump())
    assert build_config(str(saved)).dump() == cfg.dump()

    data = DataSplits(cfg)
    method = build_method(cfg, data.counts)
    assert method.epochs == 280 and method.splits.boundaries == (0,) + bounds
    opt = build_optimizer(cfg, method)
    sch = LRSchedule(cfg, opt, method.epochs)
    loader = train_loader(cfg, data.train, 1, 0, cfg.SEED)
    amp = AmpContext(cfg, torch.device("cpu"))
    before = method.net.heads[2].weight.detach().clone()
    method.train()
    sch.set_epoch(1)
    for i, batch in zip(range(2), loader):
        mixed = method.prepare_batch(batch, 1)
        assert ("label_b" in mixed) == (variant == "if50")
        loss, out, logs = train_step(method, method, batch, opt, amp, 1, cfg, (sch, i, len(loader)))
        assert torch.isfinite(loss) and set(logs) >= {"expert1_ce", "expert3_comp"}
    assert not torch.equal(before, method.net.heads[2].weight)
    assert opt.param_groups[1]["lr"] == pytest.approx(opt.param_groups[0]["lr"] * method.splits.data_shares[1])


def test_a_ce_config_is_not_taken_for_an_ace_release():
    cfg = build_config("", ["LOSS.LOSS_TYPE", "CrossEntropy", "TRAIN.OPTIMIZER.TYPE", "SGD_group"])
    assert cfg.METHOD == "ce" and not cfg.DATASET.REORDER_CLASSES


# ---------------------------------------------------------------- end to end
def test_four_experts_train_through_mixup_and_unmixed_epochs_and_report_every_expert(tiny_lt, tmp_path):
    cfg = build_config(str(tiny_ace_cfg(tiny_lt, tmp_path)),
                       ["ACE.NUM_EXPERTS", "4", "ACE.THRESHOLDS", "[0.5, 0.25, 0.08]", "TRAIN.MAX_EPOCH", "1",
                        "TRAIN.UNMIX_EPOCH", "1", "DATASET.VALID_JSON", ""])
    results = train(cfg)
    assert results["epochs"] == 2 and results["checkpoint_selection"].startswith("last epoch")
    assert set(results["members"]) == {"expert1", "expert2", "expert3", "expert4"}
    assert results["many"] is None  # the tiny set has no class with > 100 images
    run = tmp_path / "out" / "tiny_ace"
    log = open(next((run / "logs").glob("train_*.log"))).read()
    assert "split boundaries b = [2, 4, 7]" in log and "expert4: target classes 7..9" in log
    assert "then 2 un-mixed epochs (2 in total)" in log and "epoch 2/2" in log
    assert json.loads((run / "class_order.json").read_text())["original_of_new_id"] == list(range(10))


@pytest.mark.slow
def test_launcher_run_logs_the_split_and_valid_prints_experts_with_na_for_a_missing_group(tiny_lt, tmp_path):
    # kill / resume: tests/methods/test_every_method.py
    cfg_path = tiny_ace_cfg(tiny_lt, tmp_path)
    opts = ["SHOW_STEP", "1", "DATASET.VALID_JSON", "", "DATASET.TEST_JSON", ""]
    r = run_cli(["bash", "data_parallel_train.sh", str(cfg_path), "cpu", "NAME", "run"] + opts)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "split boundaries b = [3, 6]" in r.stdout
    r = run_cli([PY, "valid.py", str(cfg_path), "NAME", "run", "TEST.MODEL_FILE", "latest.pth"])
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [ln for ln in r.stdout.splitlines() if ln.startswith("| ") and not ln.startswith("| prediction")]
    assert [ln.split("|")[1].strip() for ln in rows] == ["main (weight-norm aggregate)", "expert1", "expert2", "expert3"]
    assert all("n/a" in ln for ln in rows) and "nan" not in r.stdout.lower().replace("n/a", "")  # no many-shot class

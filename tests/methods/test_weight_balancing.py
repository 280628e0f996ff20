"""Weight Balancing (MaxNorm projection, the δ rule, PGD timing) and decoupled stage two (WB, LWS,
cRT) chained on the tiny Fashion-MNIST-LT fixture (docs/methods/weight_balancing.md, docs/methods/baselines.md)."""
import os

import pytest
import torch
from torch.nn import functional as F

from lib.config import build_config
from lib.engine.trainer import train
from lib.losses.weights import class_balanced_weights
from lib.methods import build_method
from lib.methods.weight_balancing import maxnorm_delta, maxnorm_project_
from lib.models.heads import build_head
from lib.models.posthoc import tau_normalize_
from lib.utils.errors import UserError
from conftest import ROOT, run_cli

# rows with norms 5, 1, 10, 2, 1.5  ->  δ = 1 + 0.1·(10 − 1) = 1.9
HAND_ROWS = torch.tensor([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0], [1.2, 1.6], [0.0, 1.5]])
HAND_DELTA = 1.9
OVER = [True, False, True, True, False]


def wb_method(*opts, counts=(50, 20, 10, 5, 2)):
    cfg = build_config("", ["METHOD", "wb", "BACKBONE.TYPE", "res32_cifar", *opts])
    return build_method(cfg, list(counts))


def set_hand_head(method):
    """Classifier rows = HAND_ROWS in the first two feature columns, zeros elsewhere; bias = 0.5, 1.5, ..."""
    head = method.net.head
    with torch.no_grad():
        head.weight.zero_()
        head.weight[:, :2] = HAND_ROWS
        head.bias.copy_(torch.arange(5.0) + 0.5)
    return head


def test_delta_is_min_norm_plus_thresh_times_norm_range():
    assert maxnorm_delta(HAND_ROWS, 0.1) == pytest.approx(HAND_DELTA)
    assert maxnorm_delta(HAND_ROWS, 0.0) == pytest.approx(1.0)
    assert maxnorm_delta(HAND_ROWS, 1.0) == pytest.approx(10.0)
    m = wb_method()
    set_hand_head(m)
    m.after_pretrained_loaded()  # δ computed once, from the loaded stage-one classifier
    assert float(m.maxnorm_delta) == pytest.approx(HAND_DELTA)


def test_maxnorm_projection_caps_long_rows_at_delta_and_leaves_short_rows_and_bias():
    m = wb_method()
    head = set_hand_head(m)
    m.after_pretrained_loaded()
    before_w, before_b = head.weight.detach().clone(), head.bias.detach().clone()
    assert m.project().tolist() == OVER
    norms = head.weight.norm(dim=1)
    assert (norms <= HAND_DELTA + 1e-6).all()
    for c, over in enumerate(OVER):
        if over:  # projected onto the sphere of radius δ, direction kept
            assert norms[c].item() == pytest.approx(HAND_DELTA, abs=1e-6)
            assert torch.allclose(head.weight[c], before_w[c] * HAND_DELTA / before_w[c].norm(), atol=1e-6)
        else:
            assert torch.equal(head.weight[c], before_w[c])
    assert torch.equal(head.bias, before_b)
    assert not m.project().any()  # idempotent: nothing is left above δ


def test_project_helper_returns_mask_of_projected_rows():
    w = HAND_ROWS.clone()
    assert maxnorm_project_(w, HAND_DELTA).tolist() == OVER


def test_delta_is_a_checkpointed_buffer_and_is_not_recomputed_after_training_moves_the_norms():
    m = wb_method()
    set_hand_head(m)
    m.after_pretrained_loaded()
    with torch.no_grad():
        m.net.head.weight.mul_(0.1)  # training shrinks the norms: δ must stay the stage-one value
    m.project()
    assert float(m.maxnorm_delta) == pytest.approx(HAND_DELTA)
    resumed = wb_method()
    resumed.load_state_dict(m.state_dict())
    assert float(resumed.maxnorm_delta) == pytest.approx(HAND_DELTA)


def test_delta_without_pretrained_model_comes_from_the_head_at_first_projection():
    m = wb_method()
    set_hand_head(m)
    assert torch.isnan(m.maxnorm_delta)
    m.project()
    assert float(m.maxnorm_delta) == pytest.approx(HAND_DELTA)


@pytest.mark.parametrize("every,maxnorm,calls_in_steps,calls_at_end", [
    ("iteration", True, 3, 0), ("epoch", True, 0, 1), ("iteration", False, 0, 0)])
def test_pgd_every_iteration_projects_after_each_step_and_epoch_once_at_epoch_end(
        every, maxnorm, calls_in_steps, calls_at_end):
    m = wb_method("WB.PGD_EVERY", every, "WB.MAXNORM", str(maxnorm))
    calls = []
    m.project = lambda: calls.append(1)
    m.on_epoch_start(1)
    for _ in range(3):
        m.after_optimizer_step()
    assert len(calls) == calls_in_steps
    m.on_epoch_end(1)
    assert len(calls) == calls_in_steps + calls_at_end


def test_epoch_log_counts_rows_projected():
    m = wb_method("WB.PGD_EVERY", "epoch")
    set_hand_head(m)
    m.after_pretrained_loaded()
    m.on_epoch_start(1)
    logs = m.on_epoch_end(1)
    assert logs["maxnorm_rows_projected"] == 3 and logs["maxnorm_projections"] == 3
    assert logs["maxnorm_delta"] == pytest.approx(HAND_DELTA)
    m.on_epoch_start(2)
    assert m.on_epoch_end(2)["maxnorm_rows_projected"] == 0  # counts restart every epoch


def test_unknown_pgd_every_is_a_clear_error():
    with pytest.raises(UserError, match="WB.PGD_EVERY"):
        wb_method("WB.PGD_EVERY", "batch")


def test_tau_norm_zero_keeps_logits_and_one_gives_norm_scaled_cosine_logits():
    torch.manual_seed(0)
    head = build_head("FC", 8, 5)
    f = torch.randn(4, 8)
    z = head(f).detach()
    tau_normalize_(head, 0.0)
    assert torch.allclose(head(f), z)
    tau_normalize_(head, 1.0)
    cos = F.cosine_similarity(f.unsqueeze(1), head.weight.unsqueeze(0), dim=2)  # (B, C)
    # z_c = ŵ_c·f + b_c = ‖f‖·cos(f, w_c) + b_c: cosine logits scaled by ‖f‖, bias untouched
    assert torch.allclose(head(f) - head.bias, f.norm(dim=1, keepdim=True) * cos, atol=1e-5)


def test_class_balanced_weights_match_the_formula_for_beta_0_9999():
    # w_c = (1 − β)/(1 − β^{n_c}) for n = 100, 10, 1: 0.0100495833, 0.1000450083, 1 (sum 1.1100945916),
    # normalised to sum C = 3
    w = class_balanced_weights([100, 10, 1], 0.9999)
    assert w.tolist() == pytest.approx([0.0271587216, 0.2703688740, 2.7024724044], rel=1e-6)
    assert float(w.sum()) == pytest.approx(3.0)


# ---------------------------------------------------------------- two-stage runs on the tiny fixture
STAGE_ONE = "tiny"


def stage_two(stage_one_cfg, name, *opts):
    """Stage two on top of the stage-one run, its checkpoint named as in the configs: relative to OUTPUT_DIR."""
    return build_config(str(stage_one_cfg), [
        "NAME", name, "NETWORK.PRETRAINED", "True",
        "NETWORK.PRETRAINED_MODEL", f"{STAGE_ONE}/models/best_model.pth",
        "BACKBONE.FREEZE", "True", "TRAIN.MAX_EPOCH", "1", *opts])


def state(cfg, file="latest.pth"):
    path = os.path.join(cfg.OUTPUT_DIR, cfg.NAME, "models", file)
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def backbone_items(sd):
    return {k: v for k, v in sd.items() if k.startswith("net.backbone.")}


@pytest.fixture(scope="module")
def stage_one(tiny_lt, tmp_path_factory):
    """One stage-one run (conftest's tiny_cfg: CE, ResNet-32, 2 epochs) shared by the stage-two tests."""
    tmp = tmp_path_factory.mktemp("stage_one")
    path = tmp / "tiny.yaml"
    path.write_text(f"""
NAME: {STAGE_ONE}
OUTPUT_DIR: {tmp / 'out'}
INPUT_SIZE: (28, 28)
SHOW_STEP: 0
DATASET: {{TRAIN_JSON: {tiny_lt['train']}, VALID_JSON: {tiny_lt['val']}, TEST_JSON: {tiny_lt['test']}}}
BACKBONE: {{TYPE: res32_cifar}}
TRAIN:
  BATCH_SIZE: 32
  MAX_EPOCH: 2
  NUM_WORKERS: 0
  OPTIMIZER: {{BASE_LR: 0.05, WEIGHT_DECAY: 5e-4}}
  LR_SCHEDULER: {{TYPE: multistep, LR_STEP: [2]}}
TEST: {{BATCH_SIZE: 100, NUM_WORKERS: 0}}
TRANSFORMS:
  TRAIN_TRANSFORMS: ("random_crop", "random_horizontal_flip")
  TEST_TRANSFORMS: ()
  NORMALIZE: fashion_mnist
""")
    cfg = build_config(str(path))
    return path, cfg, train(cfg)


def test_wb_two_stage_run_chains_and_keeps_frozen_backbone_and_bn_statistics(stage_one):
    cfg_path, cfg1, results1 = stage_one
    cfg2 = stage_two(cfg_path, "wb2", "METHOD", "wb", "LOSS.LOSS_TYPE", "ClassBalanceSoftmaxBCE",
                     "TRAIN.OPTIMIZER.WEIGHT_DECAY", "0.1", "TRAIN.OPTIMIZER.BASE_LR", "0.01")
    results2 = train(cfg2)
    assert results1["num_images"] == results2["num_images"] == 200
    assert 0 <= results2["top1"] <= 100
    one, two = state(cfg1, "best_model.pth"), state(cfg2)
    bb1, bb2 = backbone_items(one), backbone_items(two)
    assert bb1.keys() == bb2.keys() and any("running_mean" in k for k in bb1)
    for k in bb1:  # weights, BN affine AND BN running statistics
        assert torch.equal(bb1[k], bb2[k]), k
    assert not torch.equal(one["net.head.weight"], two["net.head.weight"])  # the classifier trained
    delta = maxnorm_delta(one["net.head.weight"], 0.1)
    assert float(two["maxnorm_delta"]) == pytest.approx(delta)
    assert (two["net.head.weight"].norm(dim=1) <= delta + 1e-6).all()


def test_lws_stage_two_trains_only_the_scales(stage_one):
    cfg_path, cfg1, _ = stage_one
    cfg2 = stage_two(cfg_path, "lws2", "CLASSIFIER.TYPE", "LWS", "CLASSIFIER.LWS_FREEZE_LINEAR", "True",
                     "TRAIN.SAMPLER.TYPE", "weighted sampler")
    train(cfg2)
    one, two = state(cfg1, "best_model.pth"), state(cfg2)
    assert set(two) - set(one) == {"net.head.scales"}  # the FC checkpoint had no σ: initialised to 1
    for k in one:
        assert torch.equal(one[k], two[k]), k
    assert not torch.equal(two["net.head.scales"], torch.ones(10))


def test_crt_stage_two_reinitialises_the_classifier_on_frozen_features(stage_one):
    cfg_path, cfg1, _ = stage_one
    cfg2 = stage_two(cfg_path, "crt2", "CLASSIFIER.REINIT", "True", "TRAIN.SAMPLER.TYPE", "weighted sampler")
    assert "top1" in train(cfg2)
    one, two = state(cfg1, "best_model.pth"), state(cfg2)
    for k, v in backbone_items(one).items():
        assert torch.equal(v, two[k]), k
    assert not torch.allclose(one["net.head.weight"], two["net.head.weight"])


def test_stage_one_checkpoint_with_another_class_count_is_a_clear_error(tiny_cfg, tmp_path):
    cfg = build_config(str(tiny_cfg))
    other = build_method(cfg, [30, 20, 10])  # 3 classes; the tiny data set has 10
    path = tmp_path / "three_classes.pth"
    torch.save({"state_dict": other.state_dict()}, path)
    cfg2 = build_config(str(tiny_cfg), ["NAME", "mismatch", "METHOD", "wb", "NETWORK.PRETRAINED", "True",
                                        "NETWORK.PRETRAINED_MODEL", str(path), "BACKBONE.FREEZE", "True"])
    with pytest.raises(UserError, match=r"does not fit this model \(shape mismatch: net\.head\.weight \(3, 64\) "
                                        r"vs model \(10, 64\)"):
        train(cfg2)


def test_lws_freeze_linear_needs_an_lws_head():
    with pytest.raises(UserError, match="CLASSIFIER.LWS_FREEZE_LINEAR needs CLASSIFIER.TYPE LWS"):
        wb_method("CLASSIFIER.LWS_FREEZE_LINEAR", "True")


@pytest.mark.slow
def test_two_stage_script_runs_both_stages_with_shared_overrides(tiny_cfg, tmp_path):
    stage2 = tmp_path / "stage2.yaml"
    text = (tiny_cfg.read_text().replace("NAME: tiny", "NAME: tiny_wb2").replace("METHOD: ce", "METHOD: wb")
            .replace("  TYPE: res32_cifar\n", "  TYPE: res32_cifar\n  FREEZE: True\n")
            .replace("BASE_LR: 0.05", "BASE_LR: 0.01").replace("WEIGHT_DECAY: 5e-4", "WEIGHT_DECAY: 0.1"))
    stage2.write_text(text + "NETWORK:\n  PRETRAINED: True\n  PRETRAINED_MODEL: tiny/models/best_model.pth\n"
                      "LOSS:\n  LOSS_TYPE: ClassBalanceSoftmaxBCE\n")
    out = tmp_path / "elsewhere"  # an OUTPUT_DIR override reaches both stages: stage two finds stage one there
    r = run_cli(["bash", "tools/two_stage.sh", str(tiny_cfg), str(stage2), "OUTPUT_DIR", str(out),
                 "TRAIN.MAX_EPOCH", "1"], cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (out / "tiny" / "results.json").is_file() and (out / "tiny_wb2" / "results.json").is_file()
    assert "== stage two" in r.stdout

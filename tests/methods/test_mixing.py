"""The CE method's mixing combiners (docs/methods/baselines.md): mix_up, remix, manifold_mix_up."""
import pytest
import torch
import torch.nn.functional as F

from lib.config import build_config
from lib.methods import build_method, mixing
from lib.utils.errors import UserError

COUNTS = [100, 10, 1]


def method(*opts, counts=COUNTS):
    cfg = build_config("", ["INPUT_SIZE", "(8, 8)", *map(str, opts)])
    torch.manual_seed(0)
    m = build_method(cfg, counts)
    m.train()
    return m


def batch(n=6):
    g = torch.Generator().manual_seed(1)
    return {"image": torch.randn(n, 3, 8, 8, generator=g), "label": torch.tensor([0, 1, 2, 0, 1, 2])[:n],
            "index": torch.arange(n)}


@pytest.fixture
def fixed_mixing(monkeypatch):
    """Pin lambda and the pairing (b = reversed batch) so expected values can be written out."""
    def pin(lam):
        monkeypatch.setattr(mixing, "sample_lambda", lambda alpha: lam)
        monkeypatch.setattr(mixing, "pair_permutation",
                            lambda n, device=None, chunks=1: (torch.arange(n).flip(0), torch.arange(n).flip(0)))
    return pin


def per_sample_ce(logits, labels):
    return F.cross_entropy(logits, labels, reduction="none")


@pytest.mark.parametrize("combiner", ["mix_up", "remix", "manifold_mix_up"])
def test_lambda_one_reproduces_the_unmixed_loss(combiner, fixed_mixing):
    fixed_mixing(1.0)
    m = method("TRAIN.COMBINER.TYPE", combiner, "TRAIN.COMBINER.MANIFOLD_MIX_UP.LOCATION", "layer2")
    b = batch()
    mixed = m.prepare_batch(b, epoch=1)
    loss, _ = m.loss(m(mixed), mixed, epoch=1)
    plain, _ = m.loss(m(b), b, epoch=1)
    assert loss.item() == pytest.approx(plain.item(), rel=1e-6)


def test_mix_up_mixes_images_and_labels_with_the_same_pairing(fixed_mixing):
    fixed_mixing(0.3)
    m = method("TRAIN.COMBINER.TYPE", "mix_up")
    b = batch()
    out = m.prepare_batch(b, epoch=1)
    assert torch.allclose(out["image"], 0.3 * b["image"] + 0.7 * b["image"].flip(0))
    assert out["label_b"].tolist() == b["label"].flip(0).tolist()
    z = m(out)
    expected = (0.3 * per_sample_ce(z, b["label"]) + 0.7 * per_sample_ce(z, out["label_b"])).mean()
    assert m.loss(z, out, epoch=1)[0].item() == pytest.approx(expected.item(), rel=1e-6)


def test_mixing_happens_only_in_training():
    m = method("TRAIN.COMBINER.TYPE", "mix_up")
    m.eval()
    b = batch()
    assert m.prepare_batch(b, epoch=1) is b


def test_remix_label_weights_follow_kappa_and_tau():
    y_a = torch.tensor([0, 2, 0, 1, 1])
    y_b = torch.tensor([2, 0, 1, 1, 0])  # ratios n_a / n_b: 100, 0.01, 10, 1, 0.1
    # lambda 0.3 < tau: a head-over-tail pair (ratio >= kappa) takes label b (weight 0); the
    # tail-over-head pair needs 1 - lambda < tau (0.7, no) so it keeps lambda
    w = mixing.remix_label_weights(COUNTS, y_a, y_b, 0.3, kappa=3.0, tau=0.5)
    assert w.tolist() == pytest.approx([0.0, 0.3, 0.0, 0.3, 0.3])
    # lambda 0.7: 1 - lambda = 0.3 < tau, so a rare a (ratio <= 1/kappa) takes label a (weight 1)
    w = mixing.remix_label_weights(COUNTS, y_a, y_b, 0.7, kappa=3.0, tau=0.5)
    assert w.tolist() == pytest.approx([0.7, 1.0, 0.7, 0.7, 1.0])
    # kappa 20: the 10x pairs are no longer imbalanced enough
    w = mixing.remix_label_weights(COUNTS, y_a, y_b, 0.3, kappa=20.0, tau=0.5)
    assert w.tolist() == pytest.approx([0.0, 0.3, 0.3, 0.3, 0.3])


def test_remix_mixes_images_with_lambda_and_labels_with_lambda_y(fixed_mixing):
    fixed_mixing(0.3)
    m = method("TRAIN.COMBINER.TYPE", "remix", "TRAIN.COMBINER.REMIX.WEIGHTING", "per_sample")
    b = batch()  # labels 0 1 2 0 1 2, partners 2 1 0 2 1 0
    out = m.prepare_batch(b, epoch=1)
    assert torch.allclose(out["image"], 0.3 * b["image"] + 0.7 * b["image"].flip(0))
    lam_y = torch.tensor([0.0, 0.3, 0.3, 0.0, 0.3, 0.3])  # head a with tail b and lambda < tau -> 0
    assert out["mix_weight"].tolist() == pytest.approx(lam_y.tolist())
    z = m(out)
    expected = (lam_y * per_sample_ce(z, b["label"]) + (1 - lam_y) * per_sample_ce(z, out["label_b"])).mean()
    assert m.loss(z, out, epoch=1)[0].item() == pytest.approx(expected.item(), rel=1e-6)


def test_remix_batch_mean_weighting_is_bots_release_form(fixed_mixing):
    """BoT's release: mean(lam_y) L(y_a) + mean(1 - lam_y) L(y_b), each L a batch mean."""
    fixed_mixing(0.3)
    m = method("TRAIN.COMBINER.TYPE", "remix")  # the default: the release's batch_mean
    b = batch()
    out = m.prepare_batch(b, epoch=1)
    lam_y = torch.tensor([0.0, 0.3, 0.3, 0.0, 0.3, 0.3])
    z = m(out)
    expected = lam_y.mean() * per_sample_ce(z, b["label"]).mean() + (1 - lam_y).mean() * per_sample_ce(
        z, out["label_b"]).mean()
    assert m.loss(z, out, epoch=1)[0].item() == pytest.approx(expected.item(), rel=1e-6)


def test_manifold_mix_up_at_layer4_mixes_only_the_labels_unless_mix_layer4(fixed_mixing):
    """BoT's release forwards layers 1-3 to its mixing backbone: at layer4 the features stay unmixed."""
    fixed_mixing(0.4)
    opts = ("BACKBONE.TYPE", "res10", "TRAIN.COMBINER.TYPE", "manifold_mix_up",
            "TRAIN.COMBINER.MANIFOLD_MIX_UP.LOCATION", "layer4")
    m, b = method(*opts), batch()
    out = m.prepare_batch(b, epoch=1)
    assert "label_b" in out and "mix_index" not in out
    assert torch.allclose(m(out), m(b), atol=1e-6)
    mixed = method(*opts, "TRAIN.COMBINER.MANIFOLD_MIX_UP.MIX_LAYER4", "True")
    out = mixed.prepare_batch(b, epoch=1)
    assert "mix_index" in out and not torch.allclose(mixed(out), mixed(b), atol=1e-4)


def test_manifold_mix_up_at_pool_equals_mixing_the_pooled_features(fixed_mixing):
    fixed_mixing(0.4)
    m = method("TRAIN.COMBINER.TYPE", "manifold_mix_up", "TRAIN.COMBINER.MANIFOLD_MIX_UP.LOCATION", "pool")
    b = batch()
    out = m.prepare_batch(b, epoch=1)
    assert torch.equal(out["image"], b["image"])  # inputs untouched
    f = m.net.features(b["image"])
    expected = m.net.head(0.4 * f + 0.6 * f.flip(0))
    assert torch.allclose(m(out), expected, atol=1e-5)


def test_manifold_mix_up_at_a_stage_mixes_that_stage_output(fixed_mixing):
    fixed_mixing(0.4)
    m = method("TRAIN.COMBINER.TYPE", "manifold_mix_up", "TRAIN.COMBINER.MANIFOLD_MIX_UP.LOCATION", "layer1")
    b = batch()
    out = m.prepare_batch(b, epoch=1)
    bb = m.net.backbone
    h = bb.layer1(bb.stem(b["image"]))
    h = 0.4 * h + 0.6 * h.flip(0)
    expected = m.net.head(bb.pool(bb.layer3(bb.layer2(h))))
    assert torch.allclose(m(out), expected, atol=1e-5)


def test_manifold_mix_up_rejects_a_stage_the_backbone_lacks():
    with pytest.raises(UserError, match="LOCATION 'layer4'.*valid: layer1, layer2, layer3, pool, fc"):
        method("TRAIN.COMBINER.TYPE", "manifold_mix_up", "TRAIN.COMBINER.MANIFOLD_MIX_UP.LOCATION", "layer4")


def test_unknown_combiner_and_nonpositive_alpha_are_user_errors():
    with pytest.raises(UserError, match="unknown TRAIN.COMBINER.TYPE 'cutmix'"):
        method("TRAIN.COMBINER.TYPE", "cutmix")
    with pytest.raises(UserError, match="ALPHA must be > 0"):
        method("TRAIN.COMBINER.TYPE", "mix_up", "TRAIN.COMBINER.ALPHA", 0.0)


def test_pair_permutation_keeps_partners_inside_data_parallel_chunks():
    torch.manual_seed(0)
    perm, local = mixing.pair_permutation(10, chunks=3)  # chunks of 4, 4, 2 (tensor.chunk)
    assert sorted(perm.tolist()) == list(range(10))
    starts = torch.tensor([0] * 4 + [4] * 4 + [8] * 2)
    assert torch.equal(perm, starts + local)
    assert torch.equal(perm // 4, torch.arange(10) // 4)


def test_lambda_and_pairing_come_from_the_global_torch_rng():
    torch.manual_seed(5)
    first = (mixing.sample_lambda(1.0), mixing.pair_permutation(8)[0])
    torch.manual_seed(5)
    again = (mixing.sample_lambda(1.0), mixing.pair_permutation(8)[0])
    assert first[0] == again[0] and torch.equal(first[1], again[1])


def test_a_loss_that_needs_features_gets_the_pooled_feature():
    m = method("LOSS.LOSS_TYPE", "InfluenceBalancedLoss", "TRAIN.TWO_STAGE.DRW", True)
    b = batch()
    out = m(b)
    assert set(out) == {"logits", "features"}
    assert torch.allclose(out["features"], m.net.features(b["image"]), atol=1e-6)
    assert torch.equal(m.predict(out)["logits"], out["logits"])
    loss, _ = m.loss(out, b, epoch=1)
    assert torch.isfinite(loss)


@pytest.mark.parametrize("combiner", ["mix_up", "remix", "manifold_mix_up"])
def test_each_combiner_trains_end_to_end(tiny_cfg, combiner):
    from lib.engine.trainer import train

    cfg = build_config(str(tiny_cfg), ["NAME", combiner, "TRAIN.COMBINER.TYPE", combiner,
                                       "TRAIN.COMBINER.MANIFOLD_MIX_UP.LOCATION", "layer2"])
    results = train(cfg)
    assert 0.0 <= results["top1"] <= 100.0

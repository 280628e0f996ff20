"""NCL (docs/methods/ncl.md): HCM, balanced logits, NIL, NBOD, the MoCo branch (queue, EMA, shuffle-BN), the
ensemble, batched vs sequential experts, release-config compatibility, and end-to-end runs through
the launchers (SIGKILL + --ar resume, valid.py rows, 2-process gloo DDP with MoCo)."""
import json
import os

import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import default_collate

from conftest import release_fixture, run_cli
from lib.config import build_config, notices
from lib.data.build import DataSplits
from lib.engine.amp import AmpContext
from lib.engine.optim import LRSchedule, build_optimizer
from lib.engine.trainer import train, train_step
from lib.methods import build_method
from lib.methods.ncl import hard_logits, hcm_indices, hcm_mask, nbod
from lib.utils.errors import UserError

COUNTS = [40, 20, 10, 5, 2]
MOCO = ["NETWORK.MOCO", "True", "TRANSFORMS.SECOND_VIEW_TRANSFORMS", "('random_horizontal_flip',)",
        "NETWORK.MOCO_K", "16", "NETWORK.MOCO_DIM", "8", "TRAIN.BATCH_SIZE", "8"]


def ncl(*opts, counts=COUNTS):
    cfg = build_config("", ["METHOD", "ncl", "INPUT_SIZE", "(16, 16)", *opts])
    return build_method(cfg, list(counts))


def batch_of(b=8, classes=5, seed=0, size=16):
    g = torch.Generator().manual_seed(seed)
    return {"image": torch.randn(b, 3, size, size, generator=g), "image2": torch.randn(b, 3, size, size, generator=g),
            "label": torch.randint(0, classes, (b,), generator=g), "index": torch.arange(b)}


# ---------------------------------------------------------------- HCM, balanced logits, NIL
def test_hcm_mask_holds_the_ground_truth_and_the_top_negatives_of_expert_one():
    z0 = torch.tensor([[5.0, 1.0, 4.0, 3.0, 2.0], [0.0, 9.0, 8.0, 7.0, 1.0], [1.0, 2.0, 3.0, 4.0, 50.0]])
    y = torch.tensor([2, 1, 0])
    idx = hcm_indices(z0, y, 3)
    assert idx[:, 0].tolist() == [2, 1, 0]  # the ground truth first, whatever its score
    assert [sorted(r[1:]) for r in idx.tolist()] == [[0, 3], [2, 3], [3, 4]]  # the 2 highest non-target logits
    assert hcm_mask(idx, 5).tolist() == [[1, 0, 1, 1, 0], [0, 1, 1, 1, 0], [1, 0, 0, 1, 1]]


def test_balanced_logits_are_logits_plus_log_counts_and_hcm_mines_the_raw_logits_of_expert_one():
    m = ncl("LOSS.HCM_N", "2")
    z = torch.zeros(1, 3, 5)
    z[0, 0] = torch.tensor([0.0, 3.0, 0.0, 2.9, 0.0])  # raw: class 1 beats class 3; balanced (+log n): the reverse
    z[0, 1] = torch.tensor([0.0, 0.0, 0.0, 0.0, 9.0])  # expert 2 prefers class 4: must not matter
    y = torch.tensor([0])
    from lib.methods.ncl import balanced_logits

    zb = balanced_logits(z, m.log_counts)
    assert torch.allclose(zb, z + torch.tensor(COUNTS, dtype=torch.float).log())
    assert hcm_indices(z[:, 0], y, 2).tolist() == [[0, 1]]


def test_the_subset_softmax_is_a_softmax_over_the_mined_logits_and_zero_fill_is_the_release_formula():
    torch.manual_seed(0)
    zb = torch.randn(4, 3, 6)
    y = torch.tensor([0, 5, 2, 2])
    idx = hcm_indices(zb[:, 0], y, 3)
    hard, target = hard_logits(zb, y, idx, "subset")
    assert hard.shape == (4, 3, 3) and target.tolist() == [0, 0, 0, 0]
    for b in range(4):
        for i in range(3):
            sel = zb[b, i, idx[b]]
            assert torch.allclose(hard[b, i].softmax(0), sel.softmax(0))  # softmax over those logits only
            assert torch.equal(hard[b, i, 0], zb[b, i, y[b]])
    zero, target = hard_logits(zb, y, idx, "zero")
    mask = hcm_mask(idx, 6)
    assert torch.equal(target, y) and torch.allclose(zero, zb * mask[:, None])
    # the release: unselected classes have logit 0 and stay in the softmax, each adding e^0 = 1
    b, i = 1, 2
    expected = -zb[b, i, y[b]] + torch.log(torch.exp(zb[b, i, idx[b]]).sum() + (6 - 3))
    assert F.cross_entropy(zero[b, i][None], y[b][None]).item() == pytest.approx(expected.item(), rel=1e-5)


# ---------------------------------------------------------------- NBOD
def kl_reference(logits, w, detach_teacher=False):
    """w/(K−1) Σ_i Σ_{j≠i} F.kl_div(log(p_i + 1e-9), p_j, "batchmean"): the release's formula, pair by pair."""
    p = logits.softmax(-1)
    k = logits.shape[1]
    total = 0
    for i in range(k):
        for j in range(k):
            if i != j:
                teacher = p[:, j].detach() if detach_teacher else p[:, j]
                total = total + F.kl_div(torch.log(p[:, i] + 1e-9), teacher, reduction="batchmean")
    return w / (k - 1) * total


def test_nbod_is_zero_for_identical_experts_and_positive_otherwise_with_gradient_on_both_sides():
    torch.manual_seed(0)
    same = torch.randn(4, 1, 7).repeat(1, 3, 1)
    assert abs(nbod(same, 0.6).item()) < 1e-6
    z = torch.randn(4, 3, 7, requires_grad=True)
    value = nbod(z, 0.6)
    assert value.item() > 0.01
    assert value.item() == pytest.approx(kl_reference(z, 0.6).item(), rel=1e-5)
    g, = torch.autograd.grad(value, z)
    g_ref, = torch.autograd.grad(kl_reference(z, 0.6), z)
    g_student_only, = torch.autograd.grad(kl_reference(z, 0.6, detach_teacher=True), z)
    assert torch.allclose(g, g_ref, atol=1e-6)
    assert not torch.allclose(g, g_student_only, atol=1e-4)  # the teacher side p_j carries gradient too
    assert (g.abs().sum(dim=(0, 2)) > 0).all()  # every expert gets gradient


@pytest.mark.parametrize("fill", ["subset", "zero"])
def test_total_loss_matches_a_reference_written_by_hand(fill):
    m = ncl("LOSS.HCM_N", "3", "LOSS.HCM_FILL", fill, "LOSS.MULTI_CLASIIFIER_LOSS.DIVERSITY_FACTOR", "0.6",
            "LOSS.MULTI_CLASIIFIER_LOSS.DIVERSITY_FACTOR_HCM", "0.4", "LOSS.CE_RATIO", "1.0", "LOSS.HCM_RATIO", "0.5")
    torch.manual_seed(1)
    z = torch.randn(6, 3, 5, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    loss, logs = m.loss({"logits": z}, {"label": y}, 1)
    zb = z + torch.tensor(COUNTS, dtype=torch.float).log()
    s = z[:, 0].detach().clone()
    s[torch.arange(6), y] = 999999.0  # the release's marker for the ground truth
    top = s.topk(3, dim=1).indices
    mask = torch.zeros(6, 5).scatter_(1, top, 1.0)
    ce = sum(F.cross_entropy(zb[:, i], y) for i in range(3))
    if fill == "zero":
        hard = torch.stack([zb[:, i] * mask for i in range(3)], 1)
        hard_y = y
    else:
        hard = torch.stack([torch.stack([zb[b, i, top[b]] for b in range(6)]) for i in range(3)], 1)
        hard_y = torch.zeros_like(y)
    hcm = sum(F.cross_entropy(hard[:, i], hard_y) for i in range(3))
    ref = 1.0 * ce + 0.5 * hcm + kl_reference(zb, 0.6) + kl_reference(hard, 0.4)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-5)
    assert logs["ce"].item() == pytest.approx(ce.item(), rel=1e-5)  # sums over experts, not means
    g, = torch.autograd.grad(loss, z)
    g_ref, = torch.autograd.grad(ref, z)
    assert torch.allclose(g, g_ref, atol=1e-5)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("opts,counts,match", [
    (["NCL.NUM_EXPERTS", "1"], COUNTS, "at least 2 experts"),
    (["BACKBONE.MULTI_NETWORK_TYPE", "['res32_cifar']"], COUNTS, "at least 2 experts"),
    (["NCL.NUM_EXPERTS", "2", "BACKBONE.MULTI_NETWORK_TYPE", "['res32_cifar', 'res32_cifar', 'res32_cifar']"], COUNTS,
     "lists 3 experts"),
    ([], [10, 0, 5], "class 1 has no training images"),
    (["NETWORK.MOCO", "True"], COUNTS, "TRANSFORMS.SECOND_VIEW_TRANSFORMS"),
    (MOCO[:-4] + ["NETWORK.MOCO_K", "20", "TRAIN.BATCH_SIZE", "8"], COUNTS, "MOCO_K 20 must be a positive multiple"),
    (["NCL.BATCHED_EXPERTS", "True", "CLASSIFIER.TYPE", "LWS"], COUNTS, "NCL.BATCHED_EXPERTS"),
    (["NCL.BATCHED_EXPERTS", "True", "BACKBONE.MULTI_NETWORK_TYPE", "['res32_cifar', 'res10']"], COUNTS,
     "NCL.BATCHED_EXPERTS"),
    (["TRAIN.COMBINER.TYPE", "mix_up"], COUNTS, "TRAIN.COMBINER.TYPE must be default"),
])
def test_bad_settings_are_one_line_errors(opts, counts, match):
    with pytest.raises(UserError, match=match) as e:
        ncl(*opts, counts=counts)
    assert "\n" not in str(e.value)


def test_another_loss_type_and_ncl_plus_are_refused():
    with pytest.raises(UserError, match="must be NIL_NBOD"):
        build_config("", ["METHOD", "ncl", "LOSS.LOSS_TYPE", "FocalLoss"])
    with pytest.raises(UserError, match="NCL\\+\\+"):
        build_config("", ["LOSS.LOSS_TYPE", "NIL_NBOD_plus"])


# ---------------------------------------------------------------- MoCo
def step(m, b, opt=None):
    m.train()
    b = m.prepare_batch(dict(b), 1)
    out = m(b)
    loss, logs = m.loss(out, b, 1)
    if opt is not None:
        opt.zero_grad()
        loss.backward()
        opt.step()
    m.after_optimizer_step()
    return out, b, logs


def test_moco_queue_receives_the_keys_keeps_its_size_and_wraps_its_pointer():
    torch.manual_seed(0)
    m = ncl(*MOCO, "NCL.MOCO.REPLICATE_RELEASE_QUIRKS", "False")
    assert m.moco_queue.shape == (3, 8, 16) and int(m.moco_queue_ptr) == 0
    k1 = torch.randn(8, 3, 8)
    m.enqueue(k1)
    assert int(m.moco_queue_ptr) == 8 and m.moco_queue.shape == (3, 8, 16)
    assert torch.allclose(m.moco_queue[:, :, :8], F.normalize(k1, dim=-1).permute(1, 2, 0))
    k2 = torch.randn(8, 3, 8)
    m.enqueue(k2)
    assert int(m.moco_queue_ptr) == 0  # wrapped
    m.enqueue(torch.randn(8, 3, 8))
    assert int(m.moco_queue_ptr) == 8 and torch.allclose(m.moco_queue[:, :, 8:],
                                                          F.normalize(k2, dim=-1).permute(1, 2, 0))
    # a training step enqueues this step's keys (after the optimizer step), in batch order
    b = batch_of()
    before = m.moco_queue.clone()
    out, shuffled, logs = step(m, b)
    assert int(m.moco_queue_ptr) == 0 and torch.equal(m.moco_queue[:, :, :8], before[:, :, :8])
    assert logs["infonce"].item() > 0
    with torch.no_grad():  # the key encoder on the un-shuffled second view (one process: BN statistics agree)
        f = torch.stack([e.backbone(b["image2"]) for e in m.key_experts])
        keys = torch.stack([e.projector(fi) for e, fi in zip(m.key_experts, f)])
    assert torch.allclose(m.moco_queue[:, :, 8:], F.normalize(keys, dim=-1).transpose(1, 2), atol=1e-5)


def test_shuffle_bn_permutes_the_key_batch_and_the_keys_come_back_in_batch_order():
    torch.manual_seed(3)
    m = ncl(*MOCO)
    b = batch_of()
    m.train()
    shuffled = m.prepare_batch(dict(b), 1)
    perm = shuffled["moco_perm"]
    assert not torch.equal(perm, torch.arange(8)) and torch.equal(shuffled["image2"], b["image2"][perm])
    out = m(shuffled)
    m.key_experts.eval()  # per-sample keys (running statistics), to compare row by row
    with torch.no_grad():
        k_shuffled = m._keys(shuffled["image2"]).transpose(0, 1)
        k_plain = m._keys(b["image2"]).transpose(0, 1)
    local, every = m._unshuffled_keys(k_shuffled, shuffled)
    assert torch.allclose(local, k_plain, atol=1e-6) and torch.allclose(every, k_plain, atol=1e-6)
    assert out["q"].shape == (8, 3, 8) and out["k"].shape == (8, 3, 8)


def test_the_key_encoder_starts_as_a_copy_and_moves_by_the_ema_rule_once_per_step():
    """Standard MoCo (NCL.MOCO.REPLICATE_RELEASE_QUIRKS False; the default is the release's)."""
    torch.manual_seed(0)
    m = ncl(*MOCO, "NETWORK.MA_MODEL_ALPHA", "0.9", "NCL.MOCO.REPLICATE_RELEASE_QUIRKS", "False")
    for q, k in zip(m.experts, m.key_experts):
        for (a, x), (_, y) in zip(list(q.backbone.named_parameters()) + list(q.projector.named_parameters()),
                                  list(k.backbone.named_parameters()) + list(k.projector.named_parameters())):
            assert torch.equal(x, y), a
    assert not any(p.requires_grad for p in m.key_experts.parameters())
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    old = {n: p.detach().clone() for n, p in m.key_experts.named_parameters()}
    step(m, batch_of(), opt)
    query = dict(m.experts.named_parameters())
    moved = 0
    for n, p in m.key_experts.named_parameters():  # θ' = m θ'_old + (1 − m) θ (the query after the step)
        assert torch.allclose(p, 0.9 * old[n] + 0.1 * query[n], atol=1e-6), n
        moved += int(not torch.equal(p, old[n]))
    assert moved > 0


def test_release_quirks_ema_k_times_after_the_forward_frozen_key_projector_and_no_copy():
    torch.manual_seed(0)
    m = ncl(*MOCO, "NETWORK.MA_MODEL_ALPHA", "0.9", "NCL.MOCO.REPLICATE_RELEASE_QUIRKS", "True",
            "NCL.MOCO.SHUFFLE_BN", "False")
    q0, k0 = m.experts[0], m.key_experts[0]
    assert not torch.equal(q0.backbone.stem.conv1.weight, k0.backbone.stem.conv1.weight)  # (c) built separately
    old = {n: p.detach().clone() for n, p in m.key_experts.named_parameters()}
    query = {n: p.detach().clone() for n, p in m.experts.named_parameters()}
    m.train()
    batch = m.prepare_batch(batch_of(), 1)
    assert all(torch.equal(p, old[n]) for n, p in m.key_experts.named_parameters())  # nothing before the forward
    with torch.no_grad():
        keys_before = m._keys(batch["image2"]).transpose(0, 1).clone()
    out = m(batch)
    assert torch.allclose(out["k"], keys_before)  # (a) the keys come from the key encoder before its update
    m.loss(out, batch, 1)  # (a) then K = 3 updates before the optimizer step: effective momentum 0.9^3
    for n, p in m.key_experts.named_parameters():
        if ".projector." in n:
            assert torch.equal(p, old[n]), n  # (b) the key projector never moves
        else:
            assert torch.allclose(p, 0.729 * old[n] + 0.271 * query[n], atol=1e-5), n
    m.after_optimizer_step()
    assert all(torch.equal(p, old[n]) for n, p in m.key_experts.named_parameters() if ".projector." in n)


def test_a_local_pretrained_file_loads_into_every_expert_and_key_encoder(tmp_path):
    from lib.models.backbones import build_backbone

    src = build_backbone("res32_cifar")
    path = tmp_path / "res32.pth"
    torch.save(src.state_dict(), path)
    for quirks in ("False", "True"):
        m = ncl(*MOCO, "BACKBONE.PRETRAINED_MODEL", str(path), "NCL.MOCO.REPLICATE_RELEASE_QUIRKS", quirks)
        for e in list(m.experts) + list(m.key_experts):
            for k, v in src.state_dict().items():
                assert torch.equal(e.backbone.state_dict()[k], v), k


# ---------------------------------------------------------------- inference
def test_the_ensemble_is_the_mean_of_the_experts_raw_logits():
    m = ncl()
    m.eval()
    b = batch_of()
    with torch.no_grad():
        out = m(b)
        pred = m.predict(out)
        each = [e.head(e.backbone(b["image"])) for e in m.experts]
    assert list(pred["members"]) == ["expert1", "expert2", "expert3"]
    for i, z in enumerate(each):
        assert torch.allclose(pred["members"][f"expert{i + 1}"], z, atol=1e-6)
    assert torch.allclose(pred["logits"], sum(each) / 3, atol=1e-6)  # no logit adjustment


# ---------------------------------------------------------------- batched experts
def pair(*opts):
    torch.manual_seed(0)
    seq = ncl("NCL.BATCHED_EXPERTS", "False", *opts)
    bat = ncl("NCL.BATCHED_EXPERTS", "True", *opts)
    bat.load_state_dict(seq.state_dict())
    return seq, bat


@pytest.mark.parametrize("opts", [[], ["CLASSIFIER.TYPE", "cos"] + MOCO], ids=["fc", "cos_moco"])
def test_batched_and_sequential_experts_give_the_same_logits_gradients_and_bn_statistics(opts):
    seq, bat = pair(*opts)
    b = batch_of()
    res = []
    for m in (seq, bat):
        torch.manual_seed(5)  # the same shuffle-BN permutation
        out, prepared, _ = step(m, b)  # forward + loss + EMA/queue
        m.zero_grad()
        loss, _ = m.loss(m(prepared), prepared, 1)
        loss.backward()
        res.append((out, loss, {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}))
    (o1, l1, g1), (o2, l2, g2) = res
    for key in o1:
        assert torch.allclose(o1[key], o2[key], atol=1e-5), key
    assert l1.item() == pytest.approx(l2.item(), rel=1e-5)
    assert g1.keys() == g2.keys() and len(g1) == len([p for p in seq.parameters() if p.requires_grad])
    for n in g1:
        assert torch.allclose(g1[n], g2[n], atol=1e-4, rtol=1e-3), n
    s1, s2 = seq.state_dict(), bat.state_dict()
    assert s1.keys() == s2.keys()
    for k in s1:  # BN running statistics (and the MoCo queue / key encoder) moved identically
        assert torch.allclose(s1[k].float(), s2[k].float(), atol=1e-5), k
    seq.eval(), bat.eval()
    with torch.no_grad():
        assert torch.allclose(seq(b)["logits"], bat(b)["logits"], atol=1e-5)


def test_a_checkpoint_of_one_expert_path_loads_into_the_other(tmp_path):
    torch.manual_seed(0)
    for src_batched, dst_batched in (("True", "False"), ("False", "True")):
        src = ncl("NCL.BATCHED_EXPERTS", src_batched, "NCL.NUM_EXPERTS", "2", *MOCO)
        step(src, batch_of())  # running statistics, queue and pointer are not at their initial values
        path = tmp_path / f"{src_batched}.pth"
        torch.save(src.state_dict(), path)
        dst = ncl("NCL.BATCHED_EXPERTS", dst_batched, "NCL.NUM_EXPERTS", "2", *MOCO)
        dst.load_state_dict(torch.load(path, weights_only=True))  # strict: same keys and shapes
        src.eval(), dst.eval()
        with torch.no_grad():
            assert torch.allclose(src(batch_of())["logits"], dst(batch_of())["logits"], atol=1e-5)
    assert "experts.0.backbone.stem.conv1.weight" in src.state_dict()
    assert {"moco_queue", "moco_queue_ptr", "key_experts.1.projector.2.weight"} <= set(src.state_dict())


@pytest.mark.parametrize("backbone", ["res50", "resnext50", "res152"])
def test_every_resnet_backbone_builds_and_runs_batched_like_sequential(backbone):
    m = ncl("BACKBONE.TYPE", backbone, "NCL.NUM_EXPERTS", "2", "CLASSIFIER.TYPE", "cos", "BACKBONE.INIT", "pytorch",
            "INPUT_SIZE", "(32, 32)", "NCL.BATCHED_EXPERTS", "True")
    assert len(m.experts) == 2 and m.experts[0].backbone.out_dim == 2048
    b = batch_of(b=2, size=32)
    m.eval()
    with torch.no_grad():
        z2 = m(b)["logits"]
        m.batched = False  # the same weights, one expert after the other
        z1 = m(b)["logits"]
    assert z1.shape == (2, 2, 5) and torch.allclose(z1, z2, atol=1e-4)


def test_batched_experts_handle_syncbatchnorm_modules():
    """Under DDP with TRAIN.SYNCBN the BNs are SyncBatchNorm: run through the module's own forward (here outside a
    process group, where SyncBatchNorm computes ordinary batch statistics)."""
    seq, bat = pair()
    for m in (seq, bat):
        m.experts = torch.nn.SyncBatchNorm.convert_sync_batchnorm(m.experts)
    b = batch_of()
    seq.train(), bat.train()
    assert torch.allclose(seq(b)["logits"], bat(b)["logits"], atol=1e-5)
    assert torch.allclose(seq.experts[1].backbone.stem.bn1.running_mean, bat.experts[1].backbone.stem.bn1.running_mean)


# ---------------------------------------------------------------- release configs
RELEASE_FILES = {False: "config__CIFAR__CIFAR100__cifar100_im100_NCL.yaml",
                 True: "config__CIFAR__CIFAR100__cifar100_im100_NCL_with_contrastive.yaml"}


def release_yaml(tmp_path, tiny_lt, contrastive=False):
    """The release's CIFAR-100 YAML as shipped (tests/fixtures/release_configs) with only its paths changed."""
    return release_fixture(tmp_path, "ncl", RELEASE_FILES[contrastive], OUTPUT_DIR=tmp_path / "out",
                           TRAIN_JSON=tiny_lt["train"], VALID_JSON=tiny_lt["test"])


@pytest.mark.parametrize("contrastive", [False, True], ids=["ncl", "ncl_with_contrastive"])
def test_a_release_cifar100_config_runs_with_only_its_paths_changed(tmp_path, tiny_lt, contrastive):
    path = release_yaml(tmp_path, tiny_lt, contrastive)
    cfg = build_config(str(path))
    said = "\n".join(notices(cfg))
    assert cfg.METHOD == "ncl" and cfg.TRAIN.COMBINER.TYPE == "default" and cfg.BACKBONE.TYPE == "res32_cifar"
    assert cfg.TRAIN.SAMPLER.TYPE == "default" and cfg.NETWORK.MOCO is contrastive
    # the release's behaviour (docs/deviations.md): zero-filled hard categories, last partial batch dropped
    assert cfg.LOSS.HCM_FILL == "zero" and cfg.TRAIN.DROP_LAST and cfg.DROPOUT is False
    assert cfg.NCL.MOCO.REPLICATE_RELEASE_QUIRKS and "LOSS.HCM_FILL zero: as the release" in said
    assert "recognised an original ncl release config" in said
    assert "TRAIN.BATCH_SIZE 64 is read as the GLOBAL batch" in said and "per GPU under DDP" in said
    assert "autoaugment" in said and "cutout" in said  # which named transforms reproduce the release's class
    assert tuple(cfg.TRANSFORMS.TRAIN_TRANSFORMS) == ("random_crop", "random_horizontal_flip")  # not swapped
    if contrastive:  # the two-view class: its second view is filled in, with a notice
        assert cfg.TRANSFORMS.SECOND_VIEW_TRANSFORMS[0] == "random_resized_crop" and "second view" in said
        assert cfg.TRANSFORMS.PROCESS_DETAIL.COLOR_JITTER.P == 0.8
    saved = tmp_path / "saved.yaml"
    saved.write_text(cfg.dump())
    assert build_config(str(saved)).dump() == cfg.dump()  # adapt_config is idempotent
    # two training steps on the tiny data (10 classes: HCM_N 30 is clamped to 10)
    data = DataSplits(cfg)
    method = build_method(cfg, data.counts)
    assert "clamped" in method.describe()[0]
    opt = build_optimizer(cfg, method)
    LRSchedule(cfg, opt).set_epoch(1)
    data.train.set_epoch(1)
    amp = AmpContext(cfg, torch.device("cpu"))
    before = method.experts[2].head.weight.detach().clone()
    for i in range(1 if contrastive else 2):  # batches of the configured size (collated here: no DataLoader workers)
        b = default_collate([data.train[j] for j in range(i * cfg.TRAIN.BATCH_SIZE, (i + 1) * cfg.TRAIN.BATCH_SIZE)])
        loss, out, logs = train_step(method, method, b, opt, amp, 1, cfg)
        assert torch.isfinite(loss) and out["logits"].shape == (b["label"].shape[0], 3, 10)
    assert not torch.equal(before, method.experts[2].head.weight)
    if contrastive:
        assert int(method.moco_queue_ptr) == 64 and "infonce" in logs


def test_release_samplers_translate_to_ours_and_the_square_root_is_taken_once(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("LOSS:\n  LOSS_TYPE: NIL_NBOD\nTRAIN:\n  SAMPLER:\n    MULTI_NETWORK_TYPE: ['weighted_square']\n")
    cfg = build_config(str(f))
    assert cfg.TRAIN.SAMPLER.TYPE == "weighted sampler" and cfg.TRAIN.SAMPLER.WEIGHTED_SAMPLER.TYPE == "square"
    assert "applied the root twice" in "\n".join(notices(cfg))
    f.write_text("LOSS:\n  LOSS_TYPE: NIL_NBOD\nTRAIN:\n  SAMPLER:\n    MULTI_NETWORK_TYPE: ['weighted_bogus']\n")
    with pytest.raises(UserError, match="TRAIN.SAMPLER.MULTI_NETWORK_TYPE"):
        build_config(str(f))


# ---------------------------------------------------------------- end to end (launchers)
TINY_NCL = ["METHOD", "ncl", "LOSS.LOSS_TYPE", "NIL_NBOD", "LOSS.HCM_N", "3", "TRAIN.MAX_EPOCH", "2",
            "SHOW_STEP", "1", "TRAIN.NUM_WORKERS", "2", "DETERMINISTIC", "True", "DATASET.VALID_JSON", "",
            "SAVE_STEP", "1"]
TINY_MOCO = ["NETWORK.MOCO", "True", "NETWORK.MOCO_K", "64", "NETWORK.MOCO_DIM", "16",
             "TRANSFORMS.SECOND_VIEW_TRANSFORMS", "('random_crop', 'random_horizontal_flip')",
             "NCL.BATCHED_EXPERTS", "True"]


def latest(run_dir):
    return torch.load(os.path.join(run_dir, "models", "latest.pth"), map_location="cpu", weights_only=True)


def test_moco_queue_takes_every_key_of_two_epochs(tiny_cfg):
    # kill / resume and valid.py for NCL with and without MoCo: tests/methods/test_every_method.py
    opts = TINY_NCL + TINY_MOCO + ["DEVICE", "cpu", "TRAIN.NUM_WORKERS", "0"]
    ref = build_config(str(tiny_cfg), ["NAME", "ref"] + opts)
    train(ref)
    b = latest(os.path.join(ref.OUTPUT_DIR, "ref"))
    n = len(json.load(open(ref.DATASET.TRAIN_JSON))["annotations"])
    assert int(b["state_dict"]["moco_queue_ptr"]) == (2 * n) % 64  # every key of 2 epochs went through the queue


@pytest.mark.slow
def test_ddp_two_gloo_processes_with_moco_complete(tiny_cfg):
    from conftest import free_port

    r = run_cli(["bash", "distributed_data_parallel_train.sh", str(tiny_cfg), "2", "cpu", "NAME", "ddp_moco"]
                + TINY_NCL + TINY_MOCO + ["TRAIN.MAX_EPOCH", "1", "TRAIN.NUM_WORKERS", "0", "DETERMINISTIC", "False"],
                env={"MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = os.path.join(os.path.dirname(tiny_cfg), "out", "ddp_moco")
    res = json.load(open(os.path.join(out, "results.json")))
    assert res["num_images"] == 200 and set(res["members"]) == {"expert1", "expert2", "expert3"}
    sd = latest(out)["state_dict"]
    assert int(sd["moco_queue_ptr"]) != 0  # keys of both ranks went into the queue
    assert torch.allclose(sd["moco_queue"].norm(dim=1), torch.ones(3, 64), atol=1e-4)

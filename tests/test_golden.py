"""Release mode against the releases' own numbers (tests/golden/, see its README).

Each case in tests/golden/*.json holds fixed inputs and what the release's code computed from them. The runners
below compute the same quantities with this project's code, configured as the published-number configs (or the
release-translation of the release's YAML) configure it, and compare with the case's tolerance rule: values within
1e-5 relative to the largest |reference| of that output, gradients within 1e-5 of the largest |gradient| (all heads
together), integers and booleans exactly. The golden files are data: never edit them to make a test pass.
"""
import json
import math
import os

import pytest
import torch

from lib.config import build_config
from lib.methods import build_method

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(ROOT, "tests", "golden")
REL = 1e-5


def cases(release, *kinds):
    with open(os.path.join(GOLDEN, f"{release}.json")) as f:
        data = json.load(f)
    return [pytest.param(c, id=c["name"]) for c in data if not kinds or c["kind"] in kinds]


def tensor(x, dtype=torch.float32, grad=False):
    t = torch.tensor(x, dtype=dtype)
    return t.requires_grad_(True) if grad else t


def assert_close(ours, ref, what):
    """|ours - ref| <= 1e-5 * max|ref| over the whole output (a scalar, an array, or a list of arrays)."""
    ours = torch.as_tensor(ours if not isinstance(ours, (list, tuple)) else torch.stack([torch.as_tensor(o) for o in ours]))
    ref = torch.as_tensor(ref, dtype=torch.float64)
    ours = ours.detach().double().reshape(ref.shape)
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    err = float((ours - ref).abs().max()) if ref.numel() else 0.0
    assert err <= REL * scale + 1e-12, f"{what}: max |ours - release| = {err:.3g} > 1e-5 x {scale:.3g}"


def grads(loss, inputs):
    """d loss / d each input (zeros where the loss does not depend on it)."""
    out = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(i) if g is None else g for g, i in zip(out, inputs)]


# ---------------------------------------------------------------- CADEL (smallcube/CADEL)
CADEL_CNN_CONFIG = "configs/imagenet_lt/cadel_res50.yaml"  # the published CNN configs' release switches
CADEL_VIT_CONFIG = "configs/imagenet_lt/cadel_vit_b16_224.yaml"
SMALL_NET = ["BACKBONE.TYPE", "res32_cifar", "BACKBONE.PRETRAINED_MODEL", "", "CADEL.AUX_HEAD", "cnn",
             "CADEL.TAPS", "[]", "CADEL.AUX_WIDTH", "0", "INPUT_SIZE", "(32, 32)"]


def cadel_method(config, p, *opts):
    """A CADEL method built from a published config (its loss and prediction switches), on a small backbone."""
    cfg = build_config(os.path.join(ROOT, config), SMALL_NET + [
        "CADEL.BINS", str(p.get("bins", 8)), "CADEL.GAMMA", str(float(p.get("gamma", 1))),
        "CADEL.BASE_WEIGHT", str(float(p.get("base_weight", 2))), "TRAIN.MAX_EPOCH", str(p.get("E", 1)), *opts])
    return build_method(cfg, [10] * p["C"])


def cascade_confidences(logits, labels, prob):
    """m_k,i = mean_{j<=k} P_j(y_i | x_i) for heads k = 1..K."""
    p = torch.stack([prob(z.detach()).gather(1, labels[:, None]).squeeze(1) for z in logits])
    return p.cumsum(0) / torch.arange(1, len(logits) + 1)[:, None]


@pytest.mark.parametrize("case", cases("cadel", "cadel_cnn_loss", "cadel_vit_loss"))
def test_cadel_cascade_loss_matches_the_release(case):
    p, x, out = case["params"], case["inputs"], case["outputs"]
    vit = case["kind"] == "cadel_vit_loss"
    method = cadel_method(CADEL_VIT_CONFIG if vit else CADEL_CNN_CONFIG, p,
                          "CADEL.LOSS", "sigmoid" if vit else "softmax")
    logits = [tensor(z, grad=True) for z in x["logits"]]
    batch = {"label": tensor(x["labels"], torch.long)}
    if p["mixup"]:
        batch.update(label_b=tensor(x["labels_b"], torch.long), lam=float(x["lam"]))
    loss, logs = method.loss(logits, batch, p["epoch"])
    assert logs["T"] == pytest.approx(out["T"], abs=1e-12)
    assert_close(loss, out["loss"], "loss")
    assert_close([logs[f"loss_head{k + 1}"] for k in range(p["K"])], out["loss_per_head"], "loss per head")
    assert_close(grads(loss, logits), out["grad_logits"], "grad_logits")
    from lib.methods.cadel import bin_weights

    prob = torch.sigmoid if vit else (lambda z: z.softmax(1))
    for suffix, key in (("a", "label"), ("b", "label_b")):
        if f"confidence_{suffix}" in out:
            m = cascade_confidences(logits, batch[key], prob)
            assert_close(m, out[f"confidence_{suffix}"], f"confidence_{suffix}")
            w = torch.stack([bin_weights(mk, p["bins"], p["gamma"], p["base_weight"])[0] for mk in m])
            assert_close(w, out[f"weights_{suffix}"], f"weights_{suffix}")


@pytest.mark.parametrize("case", cases("cadel", "cadel_histogram_weights"))
def test_cadel_histogram_weights_match_the_release_on_bin_edges(case):
    from lib.methods.cadel import bin_weights, cascade_loss

    p, x, out = case["params"], case["inputs"], case["outputs"]
    method = cadel_method(CADEL_CNN_CONFIG, p)
    logits, labels = [tensor(z) for z in x["logits"]], tensor(x["labels"], torch.long)
    m = cascade_confidences(logits, labels, lambda z: z.softmax(1))
    assert_close(m, out["confidence"], "confidence")
    w = torch.stack([bin_weights(mk, p["bins"], p["gamma"], p["base_weight"])[0] for mk in m])
    assert_close(w, out["weights"], "weights")
    _, per_head = cascade_loss(logits, labels, p["T"], p["bins"], p["gamma"], p["base_weight"],
                               terms=method.terms, weighting=method.weighting)
    assert_close(per_head, out["loss_per_head"], "loss per head")


@pytest.mark.parametrize("case", cases("cadel", "cadel_prediction"))
def test_cadel_prediction_and_logit_adjustment_match_the_release(case):
    from lib.evaluation.evaluator import adjust_logits

    p, x, out = case["params"], case["inputs"], case["outputs"]
    method = cadel_method(CADEL_VIT_CONFIG if p["runner"] == "vit" else CADEL_CNN_CONFIG, p)
    method.eval()
    logits, counts = [tensor(z) for z in x["logits"]], x["counts"]
    ours = adjust_logits(method.predict(logits)["logits"], counts, p["tau"])
    prior = torch.tensor(counts, dtype=torch.float32)
    assert_close((prior / prior.sum()).log(), out["log_prior"], "log prior")
    assert out["log_uniform"] == pytest.approx(math.log(1 / p["C"]), rel=1e-7)
    assert_close(ours, out["adjusted_logits"], "adjusted logits")
    assert ours.argmax(1).tolist() == out["argmax"]


# ---------------------------------------------------------------- NCL (Bazinga699/NCL)
NCL_CONFIG = "configs/cifar100_lt/ncl_if100.yaml"  # the published CIFAR config: its HCM_FILL is the release's


def ncl_method(p, counts):
    opts = ["NCL.NUM_EXPERTS", str(p["K"]), "LOSS.HCM_N", str(p["HCM_N"]), "LOSS.CE_RATIO", str(p["CE_RATIO"]),
            "LOSS.HCM_RATIO", str(p["HCM_RATIO"]), "NCL.BATCHED_EXPERTS", "False",
            "LOSS.MULTI_CLASIIFIER_LOSS.DIVERSITY_FACTOR", str(p["DIVERSITY_FACTOR"]),
            "LOSS.MULTI_CLASIIFIER_LOSS.DIVERSITY_FACTOR_HCM", str(p["DIVERSITY_FACTOR_HCM"])]
    if "D" in p:  # the MoCo branch (NETWORK.MOCO), the release's quirks as in its contrastive config
        opts += ["NETWORK.MOCO", "True", "NETWORK.MOCO_DIM", str(p["D"]), "NETWORK.MOCO_K", str(p["Q"]),
                 "NETWORK.MOCO_T", str(p["T"]), "LOSS.CON_RATIO", str(p["CON_RATIO"]), "TRAIN.BATCH_SIZE", str(p["B"]),
                 "TRANSFORMS.SECOND_VIEW_TRANSFORMS", "('random_horizontal_flip',)", "NCL.MOCO.SHUFFLE_BN", "False",
                 "NCL.MOCO.REPLICATE_RELEASE_QUIRKS", "True"]
    cfg = build_config(os.path.join(ROOT, NCL_CONFIG), opts)
    return build_method(cfg, counts)


@pytest.mark.parametrize("case", cases("ncl"))
def test_ncl_nil_nbod_and_infonce_match_the_release(case):
    from lib.methods.ncl import hcm_indices, hcm_mask

    p, x, out = case["params"], case["inputs"], case["outputs"]
    method = ncl_method(p, x["counts"]).train()
    logits = [tensor(z, grad=True) for z in x["logits"]]
    labels = tensor(x["labels"], torch.long)
    outputs = {"logits": torch.stack(logits, dim=1)}
    inputs = list(logits)
    if "q" in x:
        q = [tensor(v, grad=True) for v in x["q"]]
        inputs += q
        outputs.update(q=torch.stack(q, dim=1), k=torch.stack([tensor(v) for v in x["k"]], dim=1))
        method.moco_queue.copy_(tensor(x["queue"]))
        method.moco_queue_ptr.fill_(p["queue_ptr"])
    loss, logs = method.loss(outputs, {"label": labels}, 1)
    assert_close(loss, out["loss"], "loss")
    g = grads(loss, inputs)
    assert_close(g[:p["K"]], out["grad_logits"], "grad_logits")
    if "q" in x:
        assert_close(g[p["K"]:], out["grad_q"], "grad_q")
        method.after_optimizer_step()  # the keys enter the queue
        assert_close(method.moco_queue, out["queue_after"], "queue after")
        assert [int(method.moco_queue_ptr)] * p["K"] == out["queue_ptr_after"]
        return
    mask = hcm_mask(hcm_indices(logits[0], labels, p["HCM_N"]), p["C"])
    assert mask.long().tolist() == out["hcm_mask"]
    from lib.methods.ncl import balanced_logits, hard_logits, summed_ce

    zb = balanced_logits(outputs["logits"], method.log_counts)
    assert_close(summed_ce(zb, labels), out["balanced_ce_sum"], "balanced CE sum")
    hard, y_hard = hard_logits(zb, labels, hcm_indices(logits[0], labels, method.hcm_n), method.fill)
    assert_close(summed_ce(hard, y_hard), out["hcm_ce_sum"], "hard-category CE sum")

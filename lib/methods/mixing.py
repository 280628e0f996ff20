"""Batch mixing shared by methods: CE's TRAIN.COMBINER.TYPE (docs/methods/baselines.md), ACE, CADEL.

λ ~ Beta(α, α) is drawn once per batch and a random permutation pairs sample a with sample
b = perm(a); both come from torch's global CPU RNG, which checkpoints save and restore. The
loss is Σ-form λ_i·L(z, y_a) + (1 − λ_i)·L(z, y_b), with λ_i = λ (mix_up, manifold_mix_up) or
Remix's λ_y (see `remix_label_weights`), passed to the loss as per-sample weights.
"""
import torch

from ..utils.errors import UserError

MIXING_COMBINERS = ("mix_up", "manifold_mix_up", "remix")
POST_BACKBONE_LOCATIONS = ("pool", "fc")


def sample_lambda(alpha):
    """λ ~ Beta(α, α) as a float (α > 0)."""
    a = torch.tensor(float(alpha))
    return float(torch.distributions.Beta(a, a).sample())


def pair_permutation(batch_size, device=None, chunks=1):
    """(perm, local): perm pairs sample a with perm[a]. With chunks > 1 (DataParallel splits the
    batch as `tensor.chunk(chunks)`), partners stay inside their chunk and `local` holds the
    partner's index within the chunk, which is what a replica sees after the scatter."""
    parts = torch.arange(batch_size).chunk(max(int(chunks), 1))
    perm, local = [], []
    for part in parts:
        p = torch.randperm(len(part))
        perm.append(part[p])
        local.append(p)
    perm, local = torch.cat(perm), torch.cat(local)
    return perm.to(device), local.to(device)


def mix(x, lam, index):
    """λ·x + (1 − λ)·x[index]."""
    return lam * x + (1 - lam) * x[index]


def mixup_batch(batch, alpha):
    """Input mixup: λ ~ Beta(α, α) once per batch, a random pairing perm; image <- λ·x + (1 − λ)·x[perm],
    and the batch gains label_b = y[perm] and lam (ACE's mix_up_group, CADEL.MIXUP_ALPHA)."""
    lam = sample_lambda(alpha)
    perm, _ = pair_permutation(batch["image"].shape[0], batch["image"].device)
    return dict(batch, image=mix(batch["image"], lam, perm), label_b=batch["label"][perm], lam=lam)


def remix_label_weights(counts, y_a, y_b, lam, kappa, tau):
    """Remix (Chou et al.) label weight λ_y per sample, for x = λ·x_a + (1 − λ)·x_b:
        0  if n_{y_a}/n_{y_b} ≥ κ  and λ < τ        (the mix is mostly the rarer b: label b)
        1  if n_{y_a}/n_{y_b} ≤ 1/κ and 1 − λ < τ   (the mix is mostly the rarer a: label a)
        λ  otherwise."""
    n = torch.as_tensor(counts, dtype=torch.float32, device=y_a.device)
    ratio = n[y_a] / n[y_b].clamp(min=1)
    w = torch.full(y_a.shape, float(lam), device=y_a.device)
    w = torch.where((ratio >= kappa) & (lam < tau), torch.zeros_like(w), w)
    w = torch.where((ratio <= 1.0 / kappa) & (1 - lam < tau), torch.ones_like(w), w)
    return w


def check_location(location, backbone):
    """MANIFOLD_MIX_UP.LOCATION must be a stage layer1..layerK of this backbone, `pool` or `fc`."""
    stages = [n for n in backbone.stage_names if n != "stem"]
    valid = stages + list(POST_BACKBONE_LOCATIONS)
    if location not in valid:
        raise UserError(f"TRAIN.COMBINER.MANIFOLD_MIX_UP.LOCATION {location!r} does not exist for this backbone; "
                        f"valid: {', '.join(valid)}")


def forward_manifold_mixup(net, x, location, lam, index):
    """Run `net` (backbone stages -> pool -> head) stage by stage, mixing the output of `location`
    (a stage name, `pool` = the pooled feature f, `fc` = the logits) with λ and `index`.
    Returns (logits, pooled feature)."""
    h = x
    for name, stage in net.backbone.stages():
        h = stage(h)
        if name == location:
            h = mix(h, lam, index)
    f = net.backbone.pool(h)
    if location == "pool":
        f = mix(f, lam, index)
    logits = net.head(f)
    if location == "fc":
        logits = mix(logits, lam, index)
    return logits, f


def mixed_loss(criterion, logits, y_a, y_b, weight_a, features=None):
    """Σ_i [λ_i·L_i(z, y_a) + (1 − λ_i)·L_i(z, y_b)] through the loss's per-sample weights."""
    return (criterion(logits, y_a, features=features, sample_weight=weight_a)
            + criterion(logits, y_b, features=features, sample_weight=1 - weight_a))

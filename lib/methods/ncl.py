"""NCL: Nested Collaborative Learning (Li, Tan, Wan, Lei, Guo, CVPR 2022; docs/methods/ncl.md).

K fully separate experts: expert i = its own backbone + GAP + head, all fed the same batch x;
z_i (B×C) its raw logits, n the training class counts, ẑ_i = z_i + log n (balanced logits, τ = 1).

  HCM        S = {y} ∪ the HCM_N − 1 largest non-target entries of stopgrad(z_0) (expert 0's RAW logits),
             one set per sample shared by every expert; h_i = ẑ_i restricted to S
             (LOSS.HCM_FILL zero, the release: ẑ_i ⊙ M over all C classes, unselected logits 0 but in the
             softmax; subset: a softmax over the HCM_N gathered logits only)
  NIL        L_NIL = CE_RATIO · Σ_i CE(ẑ_i, y) + HCM_RATIO · Σ_i CE(h_i, y)         (sums over experts)
  NBOD       NBOD({u_i}, w) = w/(K−1) · Σ_i Σ_{j≠i} KL(p_j ‖ p_i),  p_i = softmax(u_i),
             KL(p_j ‖ p_i) = Σ_c p_j,c (log p_j,c − log(p_i,c + 1e-9)), mean over the batch;
             both sides carry gradient (as released); applied as NBOD({ẑ_i}, α) + NBOD({h_i}, β)
  MoCo       per expert: projection q_i = g_i(f_i(x)), momentum key encoder k_i = g'_i(f'_i(x')) on the
             second view x' (TRANSFORMS.SECOND_VIEW_TRANSFORMS), queue Q_i (D × MOCO_K);
             InfoNCE_i = CE([q̂·k̂, q̂·Q_i] / T, 0); EMA θ' ← m θ' + (1 − m) θ after every optimizer step
             (NCL.MOCO.REPLICATE_RELEASE_QUIRKS: K times per step after the forward, key projector frozen)
  total      L = L_NIL + NBOD_full + NBOD_hcm (+ CON_RATIO · Σ_i InfoNCE_i)
  inference  the mean of the experts' RAW logits (no logit adjustment); every expert reported

Outputs of `forward` are batch-first (DataParallel gathers along dim 0): {"logits": B×K×C, and while
training with MoCo "q", "k": B×K×D}. NCL.BATCHED_EXPERTS runs the K experts (and key encoders) as one
wide network (lib/models/batched_experts.py); parameters, state-dict keys and outputs are those of K
separate networks, so checkpoints interchange between the two paths.

Shuffle-BN for the keys: one process (and DataParallel, in `prepare_batch` before DP splits the batch):
a random permutation of the whole batch, undone in `loss`; DDP: the second views of all ranks are
gathered, permuted by rank 0's permutation and re-split, and the keys are gathered and un-permuted in
`loss`; the queue receives the keys of every rank.
"""
import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode as CN

from ..models import batched_experts as batched
from ..models.backbones import build_backbone
from ..models.heads import build_head
from ..models.network import in_channels
from ..utils import distributed as dist_utils
from ..utils.errors import UserError
from ..utils.registry import choose
from .base import METHODS, Method
from .release import ncl as release

HCM_FILLS = ("subset", "zero")
KL_EPS = 1e-9  # the release's log(p + 1e-9)

# ---------------------------------------------------------------- losses
def balanced_logits(z, log_counts):
    """ẑ = z + log n (B×…×C)."""
    return z.float() + log_counts


def hcm_indices(z0, y, n):
    """Hard Category Mining: (B, n) class ids per sample, the ground truth first, then the n − 1 highest
    non-target entries of expert 0's detached raw logits z0 (B×C), in descending order."""
    scores = z0.detach().float().scatter(1, y[:, None], float("inf"))
    return scores.topk(n, dim=1).indices


def hcm_mask(indices, num_classes):
    """M ∈ {0,1}^{B×C}: 1 at the mined classes."""
    return torch.zeros(indices.shape[0], num_classes, device=indices.device).scatter_(1, indices, 1.0)


def hard_logits(zb, y, indices, fill="subset"):
    """The hard-category logits of every expert and their targets.
    subset: zb (B×K×C) gathered at `indices` -> (B×K×HCM_N), target 0 (the ground truth comes first);
    zero:   zb ⊙ M -> (B×K×C), unselected classes get logit 0 and stay in the softmax (the release), target y."""
    if fill == "subset":
        idx = indices[:, None, :].expand(-1, zb.shape[1], -1)
        return zb.gather(2, idx), torch.zeros_like(y)
    return zb * hcm_mask(indices, zb.shape[2])[:, None, :], y


def summed_ce(logits, y):
    """Σ_i CE(logits[:, i], y), each a mean over the batch: logits B×K×C, y (B,)."""
    b, k, c = logits.shape
    return F.cross_entropy(logits.reshape(b * k, c), y.repeat_interleave(k), reduction="sum") / b


def nbod(logits, weight):
    """NBOD({u_i}, w) = w/(K−1) Σ_i Σ_{j≠i} KL(p_j ‖ p_i) with KL(p_j ‖ p_i) = Σ_c p_j (log p_j − log(p_i + 1e-9)),
    averaged over the batch (F.kl_div's "batchmean"); logits B×K×C'. Gradient flows through p_j and p_i."""
    b, k, _ = logits.shape
    logp = logits.float().log_softmax(-1)
    p = logp.exp()
    self_term = (p * logp).sum(-1)  # (B, K): Σ_c p_j log p_j
    cross = torch.einsum("bjc,bic->bji", p, torch.log(p + KL_EPS))  # Σ_c p_j log(p_i + eps)
    kl = self_term[:, :, None] - cross  # [b, j, i] = KL(p_j ‖ p_i)
    off = ~torch.eye(k, dtype=torch.bool, device=logits.device)
    return weight / (k - 1) * kl[:, off].sum() / b


def info_nce(q, k, queue, temperature):
    """Σ_i InfoNCE_i, each a mean over the batch: q, k B×K×D (normalised here), queue K×D×Q (normalised keys).
    logits_i = [q̂_i·k̂_i, q̂_i·Q_i] / T, target 0."""
    q = F.normalize(q.float(), dim=-1)
    k = F.normalize(k.float(), dim=-1)
    pos = (q * k).sum(-1, keepdim=True)  # (B, K, 1)
    neg = torch.einsum("bkd,kdq->bkq", q, queue.float())  # (B, K, Q)
    logits = torch.cat([pos, neg], dim=-1) / temperature
    b, kk, _ = logits.shape
    return F.cross_entropy(logits.reshape(b * kk, -1), torch.zeros(b * kk, dtype=torch.long, device=q.device),
                           reduction="sum") / b


# ---------------------------------------------------------------- networks
class Expert(nn.Module):
    """One expert: `backbone` (pooled feature f, d-dim), `head` (C logits; None for a key encoder) and
    `projector` (MoCo MLP d -> d -> D, CLASSIFIER.SEMI_TYPE mlp; None without MoCo)."""

    def __init__(self, backbone, head=None, projector=None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.projector = projector


def projection_mlp(d, out_dim):
    """Linear(d, d) -> ReLU -> Linear(d, D) (the release's `mlp` SEMI_TYPE)."""
    return nn.Sequential(nn.Linear(d, d), nn.ReLU(inplace=True), nn.Linear(d, out_dim))


def _expert_types(cfg, k):
    types = list(cfg.BACKBONE.MULTI_NETWORK_TYPE)
    return types if types else [cfg.BACKBONE.TYPE] * k


def num_experts(cfg):
    """NCL.NUM_EXPERTS, else len(BACKBONE.MULTI_NETWORK_TYPE), else 3."""
    types = list(cfg.BACKBONE.MULTI_NETWORK_TYPE)
    k = int(cfg.NCL.NUM_EXPERTS) or len(types) or 3
    if types and len(types) != k:
        raise UserError(f"NCL.NUM_EXPERTS is {k} but BACKBONE.MULTI_NETWORK_TYPE lists {len(types)} experts")
    return k


@METHODS.register("ncl")
class NCLMethod(Method):
    prediction_name = "mean of experts' logits"

    # -------------------------------------------------------------- config
    @staticmethod
    def add_config(cfg):
        cfg.NCL = CN()
        cfg.NCL.NUM_EXPERTS = 0  # K >= 2; 0 = len(BACKBONE.MULTI_NETWORK_TYPE), or 3 when that is empty
        cfg.NCL.BATCHED_EXPERTS = False  # run the K experts as one wide network (same outputs and checkpoints)
        cfg.NCL.MOCO = CN()
        cfg.NCL.MOCO.SHUFFLE_BN = True  # shuffle the key batch (across ranks under DDP) for the key encoder's BN
        cfg.NCL.MOCO.REPLICATE_RELEASE_QUIRKS = True  # the release's MoCo: EMA K times per step after the forward,
        # frozen key projector, key encoder not copied; False = standard MoCo (docs/deviations.md)
        # -- the release's keys, at the release's nodes, with NCL's values as defaults
        cfg.BACKBONE.MULTI_NETWORK_TYPE = []  # one backbone name per expert (its length is K); [] = BACKBONE.TYPE
        cfg.LOSS.MULTI_CLASIIFIER_LOSS = CN()  # (sic: the release's spelling)
        cfg.LOSS.MULTI_CLASIIFIER_LOSS.DIVERSITY_FACTOR = 0.6  # alpha: NBOD weight on the full space
        cfg.LOSS.MULTI_CLASIIFIER_LOSS.DIVERSITY_FACTOR_HCM = 0.6  # beta: NBOD weight on the hard-category space
        cfg.LOSS.HCM_N = 0  # hard categories per sample incl. the ground truth; 0 = round(0.3 C), at least 2
        cfg.LOSS.HCM_RATIO = 1.0  # weight of the hard-category CE
        cfg.LOSS.CE_RATIO = 1.0  # weight of the full-space balanced CE
        cfg.LOSS.CON_RATIO = 1.0  # weight of the MoCo InfoNCE (NETWORK.MOCO True only)
        cfg.LOSS.HCM_FILL = "zero"  # zero: the release's z*M (unselected classes at logit 0 in the softmax) | subset
        cfg.NETWORK.MOCO = False  # the self-supervised MoCo branch (needs TRANSFORMS.SECOND_VIEW_TRANSFORMS)
        cfg.NETWORK.MOCO_K = 1024  # queue length per expert (a multiple of the global TRAIN.BATCH_SIZE)
        cfg.NETWORK.MOCO_DIM = 64  # projection dimension D
        cfg.NETWORK.MOCO_T = 0.2  # InfoNCE temperature
        cfg.NETWORK.MA_MODEL_ALPHA = 0.999  # key-encoder momentum m
        cfg.CLASSIFIER.SEMI_TYPE = "mlp"  # MoCo projection head: Linear(d, d) -> ReLU -> Linear(d, MOCO_DIM)
        release.add_keys(cfg)

    @staticmethod
    def matches_release_config(cfg):
        return release.matches(cfg)

    @staticmethod
    def adapt_config(cfg, explicit):
        return release.adapt(cfg, explicit)

    # -------------------------------------------------------------- construction
    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        C = self.num_classes
        empty = [c for c, n in enumerate(counts) if n <= 0]
        if empty:
            raise UserError(f"METHOD ncl needs log n_c (balanced logits z + log n), but class {empty[0]} has no "
                            f"training images ({len(empty)} empty class(es) in DATASET.TRAIN_JSON)")
        self.register_buffer("log_counts", self.class_counts.log(), persistent=False)
        K = num_experts(cfg)
        if K < 2:
            raise UserError(f"NCL needs at least 2 experts (NBOD distils between pairs), got {K} "
                            "(NCL.NUM_EXPERTS / BACKBONE.MULTI_NETWORK_TYPE)")
        self.K = K
        if cfg.TRAIN.COMBINER.TYPE != "default":
            raise UserError(f"METHOD ncl does not mix batches: TRAIN.COMBINER.TYPE must be default, got "
                            f"{cfg.TRAIN.COMBINER.TYPE!r}")
        if cfg.BACKBONE.FREEZE:
            raise UserError("METHOD ncl trains its experts end to end: BACKBONE.FREEZE must be False")
        loss = cfg.LOSS
        self.fill = choose(loss.HCM_FILL, HCM_FILLS, "LOSS.HCM_FILL")
        if int(loss.HCM_N) < 0:
            raise UserError(f"LOSS.HCM_N must be >= 1 (0 = 30% of the classes), got {loss.HCM_N}")
        # more hard categories than classes (a CIFAR-100 config on a 10-class set): the whole label space
        self.hcm_n = min(int(loss.HCM_N) or max(2, round(0.3 * C)), C)
        self.ce_ratio, self.hcm_ratio = float(loss.CE_RATIO), float(loss.HCM_RATIO)
        self.alpha = float(loss.MULTI_CLASIIFIER_LOSS.DIVERSITY_FACTOR)
        self.beta = float(loss.MULTI_CLASIIFIER_LOSS.DIVERSITY_FACTOR_HCM)
        self.con_ratio = float(loss.CON_RATIO)

        net = cfg.NETWORK
        self.moco = bool(net.MOCO)
        self.quirks = bool(cfg.NCL.MOCO.REPLICATE_RELEASE_QUIRKS)
        self.shuffle_bn = bool(cfg.NCL.MOCO.SHUFFLE_BN)
        if self.moco:
            if not len(cfg.TRANSFORMS.SECOND_VIEW_TRANSFORMS):
                raise UserError("NETWORK.MOCO True needs a second view: set TRANSFORMS.SECOND_VIEW_TRANSFORMS "
                                "(e.g. the SimCLR-like view of configs/cifar100_lt/ncl_moco_if100.yaml)")
            if cfg.CLASSIFIER.SEMI_TYPE != "mlp":
                raise UserError(f"CLASSIFIER.SEMI_TYPE must be mlp (the MoCo projection head), got "
                                f"{cfg.CLASSIFIER.SEMI_TYPE!r}")
            self.queue_len, self.moco_dim = int(net.MOCO_K), int(net.MOCO_DIM)
            batch = int(cfg.TRAIN.BATCH_SIZE)
            if self.queue_len < 1 or self.queue_len % batch:
                raise UserError(f"NETWORK.MOCO_K {net.MOCO_K} must be a positive multiple of the global "
                                f"TRAIN.BATCH_SIZE {batch} (the queue takes one whole batch of keys per step)")
            if self.moco_dim < 1 or not net.MOCO_T > 0 or not 0 <= net.MA_MODEL_ALPHA <= 1:
                raise UserError(f"NETWORK.MOCO_DIM must be >= 1, MOCO_T > 0 and MA_MODEL_ALPHA in [0, 1]; got "
                                f"{net.MOCO_DIM}, {net.MOCO_T}, {net.MA_MODEL_ALPHA}")
            self.temperature, self.momentum = float(net.MOCO_T), float(net.MA_MODEL_ALPHA)

        types = _expert_types(cfg, K)
        self.types = types
        self.experts = nn.ModuleList([self._build_expert(t, head=True) for t in types])
        if self.moco:
            self.key_experts = nn.ModuleList([self._build_expert(t, head=False) for t in types])
            if not self.quirks:  # standard MoCo: key encoder (and key projector) start as copies of the query
                for q, k in zip(self.experts, self.key_experts):
                    k.backbone.load_state_dict(q.backbone.state_dict())
                    k.projector.load_state_dict(q.projector.state_dict())
            self.key_experts.requires_grad_(False)
            queue = F.normalize(torch.randn(K, self.moco_dim, self.queue_len), dim=1)
            self.register_buffer("moco_queue", queue)
            self.register_buffer("moco_queue_ptr", torch.zeros((), dtype=torch.long))
            self._pending_keys = None

        self.batched = bool(cfg.NCL.BATCHED_EXPERTS)
        if self.batched:
            if len(set(types)) > 1:
                raise UserError(f"NCL.BATCHED_EXPERTS True needs experts of one type, got "
                                f"BACKBONE.MULTI_NETWORK_TYPE {types}; set NCL.BATCHED_EXPERTS False")
            for e in self.experts:
                batched.check_batchable(e.backbone)
                batched.check_batchable(e.head)
            batched.check_same_structure(list(self.experts))

    def _build_expert(self, backbone_type, head):
        cfg = self.cfg
        backbone = build_backbone(backbone_type, in_channels(cfg), init=cfg.BACKBONE.INIT,
                                  pretrained=cfg.BACKBONE.PRETRAINED_MODEL,  # ViTs: at INPUT_SIZE, with drop path
                                  image_size=cfg.INPUT_SIZE, drop_path=cfg.BACKBONE.DROP_PATH)
        d = backbone.out_dim
        c = cfg.CLASSIFIER
        h = build_head(c.TYPE, d, self.num_classes, bias=c.BIAS, scale=c.COS_SCALE) if head else None
        projector = projection_mlp(d, self.moco_dim) if self.moco else None
        return Expert(backbone, h, projector)

    def describe(self):
        c, loss = self.cfg, self.cfg.LOSS
        types = self.types[0] if len(set(self.types)) == 1 else "/".join(self.types)
        space = "softmax over the mined subset" if self.fill == "subset" else "zero-filled, the release"
        clamped = f", LOSS.HCM_N {loss.HCM_N} > {self.num_classes} classes: clamped" if loss.HCM_N > self.num_classes else ""
        run = "batched as one wide network" if self.batched else "run one after another"
        lines = [f"NCL: {self.K} separate experts ({types} + GAP + {c.CLASSIFIER.TYPE} head each), {run}; balanced "
                 f"logits z + log n; HCM_N {self.hcm_n} ({space}{clamped}); L = {self.ce_ratio:g} CE + "
                 f"{self.hcm_ratio:g} HCM-CE + NBOD (alpha {self.alpha:g}, beta {self.beta:g})"
                 + (f" + {self.con_ratio:g} InfoNCE" if self.moco else "")]
        if self.moco:
            lines.append(f"  MoCo: queue {self.queue_len} x dim {self.moco_dim} per expert, T {self.temperature:g}, "
                         f"momentum {self.momentum:g}, shuffle-BN {'on' if self.shuffle_bn else 'off'}, "
                         + ("the release's quirks (EMA K times per step, frozen key projector, key encoder not "
                            "copied)" if self.quirks else "standard MoCo (EMA once per step after the optimizer "
                                                         "step, key encoder copied from the query)"))
        lines.append("  prediction: mean of the experts' raw logits; members expert1..expert%d" % self.K)
        return lines

    # -------------------------------------------------------------- forward
    def _query(self, x):
        """(features K×B×d, logits K×B×C) of every expert on the same batch x."""
        if self.batched:
            f = batched.backbone_features([e.backbone for e in self.experts], x)
            return f, batched.run_vectors([e.head for e in self.experts], f)
        feats = [e.backbone(x) for e in self.experts]
        return torch.stack(feats), torch.stack([e.head(f) for e, f in zip(self.experts, feats)])

    def _project(self, f, experts):
        if self.batched:
            return batched.run_vectors([e.projector for e in experts], f)
        return torch.stack([e.projector(fi) for e, fi in zip(experts, f)])

    @torch.no_grad()
    def _keys(self, x2):
        """k_i = g'_i(f'_i(x')) for every key encoder: K×B×D."""
        if self.batched:
            f = batched.backbone_features([e.backbone for e in self.key_experts], x2)
        else:
            f = torch.stack([e.backbone(x2) for e in self.key_experts])
        return self._project(f, self.key_experts)

    def forward(self, batch):
        """{"logits": B×K×C} (+ "q", "k": B×K×D while training with MoCo; k in the shuffled order of image2)."""
        f, logits = self._query(batch["image"])
        out = {"logits": logits.transpose(0, 1)}
        if self.moco and self.training and "image2" in batch:
            out["q"] = self._project(f, self.experts).transpose(0, 1)
            out["k"] = self._keys(batch["image2"]).transpose(0, 1)
        return out

    def predict(self, outputs):
        """{"logits": mean_i z_i (raw logits), "members": {"expert<i>": z_i}}."""
        z = outputs["logits"] if isinstance(outputs, dict) else outputs
        return {"logits": z.mean(1), "members": {f"expert{i + 1}": z[:, i] for i in range(z.shape[1])}}

    # -------------------------------------------------------------- MoCo bookkeeping
    def prepare_batch(self, batch, epoch):
        """MoCo while training: shuffle-BN of the second view (module doc)."""
        if not (self.moco and self.training):
            return batch
        x2 = batch.get("image2")
        if x2 is None:
            raise UserError("NETWORK.MOCO True: the batch has no second view 'image2' "
                            "(set TRANSFORMS.SECOND_VIEW_TRANSFORMS)")
        if not self.shuffle_bn:
            return batch
        b, device = x2.shape[0], x2.device
        if dist_utils.is_distributed():
            sizes = dist_utils.all_gather_sizes(b, device)
            offset = sum(sizes[:dist_utils.rank()])
            x_all = dist_utils.all_gather_cat(x2.contiguous())
            perm = dist_utils.broadcast_(torch.randperm(sum(sizes)).to(device))
            shuffled = x_all[perm[offset:offset + b]]
        else:
            offset = 0
            perm = torch.randperm(b).to(device)
            shuffled = x2[perm]
        if x2.dim() == 4 and x2.is_contiguous(memory_format=torch.channels_last):
            shuffled = shuffled.contiguous(memory_format=torch.channels_last)
        return dict(batch, image2=shuffled, moco_perm=perm, moco_offset=offset)

    def _unshuffled_keys(self, k, batch):
        """(this rank's keys in batch order, every rank's keys for the queue), both B×K×D."""
        k = k.detach().float()
        if "moco_perm" not in batch:
            return k, dist_utils.all_gather_cat(k.contiguous())
        perm, offset = batch["moco_perm"], batch["moco_offset"]
        k_all = dist_utils.all_gather_cat(k.contiguous())  # in shuffled order (identity outside DDP)
        k_all = k_all[torch.argsort(perm)]
        return k_all[offset:offset + k.shape[0]], k_all

    @torch.no_grad()
    def enqueue(self, keys):
        """Q_i[:, ptr : ptr + n] = k̂_i for the n keys (B×K×D) of this step (all ranks), ptr += n mod MOCO_K."""
        keys = F.normalize(keys.float(), dim=-1)
        n = keys.shape[0]
        idx = (self.moco_queue_ptr + torch.arange(n, device=keys.device)) % self.queue_len
        self.moco_queue[:, :, idx] = keys.permute(1, 2, 0).to(self.moco_queue.dtype)
        self.moco_queue_ptr.copy_((self.moco_queue_ptr + n) % self.queue_len)

    def _ema_pairs(self, projector=True):
        keys, queries = [], []
        for q, k in zip(self.experts, self.key_experts):
            parts = [("backbone", q.backbone, k.backbone)]
            if projector:
                parts.append(("projector", q.projector, k.projector))
            for _, qm, km in parts:
                for (nq, pq), (nk, pk) in zip(qm.named_parameters(), km.named_parameters()):
                    keys.append(pk)
                    queries.append(pq.detach())
        return keys, queries

    @torch.no_grad()
    def momentum_update(self, times=1, projector=True):
        """θ' ← m·θ' + (1 − m)·θ for every key-encoder parameter (and key projector), `times` times."""
        keys, queries = self._ema_pairs(projector)
        for _ in range(times):
            torch._foreach_mul_(keys, self.momentum)
            torch._foreach_add_(keys, queries, alpha=1.0 - self.momentum)

    def after_optimizer_step(self):
        if not self.moco:
            return
        if not self.quirks:  # standard MoCo: once per step, after the optimizer step, key projector included
            self.momentum_update(times=1, projector=True)
        if self._pending_keys is not None:
            self.enqueue(self._pending_keys)
            self._pending_keys = None

    # -------------------------------------------------------------- loss
    def loss(self, outputs, batch, epoch):
        z = outputs["logits"]  # B×K×C raw logits
        y = batch["label"]
        zb = balanced_logits(z, self.log_counts)
        idx = hcm_indices(z[:, 0], y, self.hcm_n)
        hard, y_hard = hard_logits(zb, y, idx, self.fill)
        ce = summed_ce(zb, y)
        hcm = summed_ce(hard, y_hard)
        nbod_full = nbod(zb, self.alpha)
        nbod_hcm = nbod(hard, self.beta)
        total = self.ce_ratio * ce + self.hcm_ratio * hcm + nbod_full + nbod_hcm
        logs = {"ce": ce.detach(), "hcm_ce": hcm.detach(), "nbod": nbod_full.detach(), "nbod_hcm": nbod_hcm.detach()}
        if self.moco and "q" in outputs:
            k_local, k_all = self._unshuffled_keys(outputs["k"], batch)
            con = info_nce(outputs["q"], k_local, self.moco_queue, self.temperature)
            total = total + self.con_ratio * con
            logs["infonce"] = con.detach()
            self._pending_keys = k_all  # enqueued after the optimizer step
            if self.quirks:  # the release: K successive EMA updates after the forward, before the optimizer step
                self.momentum_update(times=self.K, projector=False)
        return total, logs

    def classifier_heads(self):
        return [e.head for e in self.experts]

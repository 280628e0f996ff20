"""Per-class weight vectors shared by the re-weighting losses (docs/methods/baselines.md)."""
import torch


def class_balanced_weights(counts, beta):
    """Cui et al.: w_c = (1 - beta) / (1 - beta^{n_c}), normalised so that sum_c w_c = C.
    Classes with n_c = 0 get weight 0 before normalisation."""
    n = torch.as_tensor(counts, dtype=torch.float64)
    w = torch.where(n > 0, (1 - beta) / (1 - torch.pow(torch.tensor(beta, dtype=torch.float64), n)),
                    torch.zeros_like(n))
    return (w / w.sum() * len(n)).float()


def inverse_frequency_weights(counts, gamma=1.0):
    """w_c = (n_min / n_c)^gamma (BoT's CostSensitiveCE; gamma = 1 is DRW's CE weighting)."""
    n = torch.as_tensor(counts, dtype=torch.float64).clamp(min=1)
    return ((n.min() / n) ** gamma).float()

"""Post-hoc classifier transforms, no training involved (docs/evaluation.md, "Post-hoc options")."""
import torch


@torch.no_grad()
def tau_normalize_(head, tau):
    """τ-norm in place: w_c ← w_c / ‖w_c‖^τ for every row of `head.weight`; the bias is left untouched.

    τ = 0 leaves W unchanged; τ = 1 is plain L2 normalisation (WB). Zero rows stay zero.
    """
    w = head.weight
    norms = w.norm(dim=1, keepdim=True).clamp_min(1e-12)
    w.div_(norms.pow(float(tau)))
    return head

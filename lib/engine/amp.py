"""Mixed precision through torch.amp: fp16 + GradScaler on CUDA, bf16 autocast on CPU."""
import contextlib

import torch

from ..utils.errors import UserError


class AmpContext:
    """`autocast()` context and `backward_and_step(loss, optimizer)`; a disabled one is plain fp32.

    TRAIN.APEX (BoT) and TRAIN.USE_AMP (ACE) turn AMP on too: apex is not installable and
    torch.amp supersedes it, which is said once in the log.
    """

    def __init__(self, cfg, device, log=None):
        a = cfg.TRAIN.AMP
        self.enabled = bool(a.ENABLE or cfg.TRAIN.APEX or cfg.TRAIN.USE_AMP)
        if cfg.TRAIN.APEX and log is not None:
            log.info("TRAIN.APEX: NVIDIA apex is not used; mixed precision runs through torch.amp instead")
        self.device_type = device.type
        dtype = a.DTYPE
        if dtype == "auto":
            dtype = "float16" if device.type == "cuda" else "bfloat16"
        if dtype not in ("float16", "bfloat16"):
            raise UserError(f"TRAIN.AMP.DTYPE must be auto, float16 or bfloat16, got {a.DTYPE!r}")
        self.dtype = getattr(torch, dtype)
        use_scaler = self.enabled and device.type == "cuda" and self.dtype == torch.float16
        self.scaler = torch.amp.GradScaler(device.type, enabled=use_scaler) if use_scaler else None

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward_and_step(self, loss, optimizer):
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self):
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, state):
        if self.scaler is not None and state:
            self.scaler.load_state_dict(state)

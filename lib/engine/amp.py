"""Mixed precision through torch.amp: fp16 + GradScaler on CUDA, bf16 autocast on CPU.

bf16 on a CPU is fast only with native bf16 instructions (x86: AVX512_BF16 or AMX_BF16; Arm: BF16).
Without them (e.g. AVX2-only AMD EPYC) autocast emulates bf16 and a ResNet-32 step is about 10x slower
than fp32 (benchmarks/results/throughput_cpu.md); AmpContext then warns once at start-up, naming the CPU's best
vector extension.
"""
import contextlib
import platform
import sys

import torch

from ..utils.errors import UserError


NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # /proc/cpuinfo flags (x86) / Features (Arm)
_warned = set()


def cpu_flags(path="/proc/cpuinfo"):
    """The CPU's feature flags (first `flags` / `Features` line of /proc/cpuinfo), or None if unknown."""
    try:
        with open(path) as f:
            for line in f:
                key = line.split(":", 1)[0].strip().lower()
                if key in ("flags", "features"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return None


def cpu_capability(flags):
    """The best vector extension in `flags`, for messages: e.g. 'AVX2', 'AVX512F', 'AVX512_BF16'."""
    for flag in ("amx_bf16", "avx512_bf16", "avx512f", "avx2", "avx", "sse4_2", "asimd", "neon"):
        if flag in flags:
            return flag.upper()
    return platform.machine() or "unknown"


def cpu_bf16_warning(flags=None):
    """The warning for bf16 autocast on this CPU, or None when it has native bf16 (or flags are unknown)."""
    flags = cpu_flags() if flags is None else flags
    if not flags or any(f in flags for f in NATIVE_BF16_FLAGS):
        return None
    return (f"warning: TRAIN.AMP on CPU uses bf16 autocast, but this CPU has no native bf16 instructions "
            f"(best: {cpu_capability(flags)}; no avx512_bf16 / amx_bf16 in /proc/cpuinfo): bf16 is emulated and "
            f"training is about 10x slower than fp32; set TRAIN.AMP.ENABLE False (and TRAIN.APEX / TRAIN.USE_AMP "
            f"False) on this machine")


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
        if self.enabled and device.type == "cpu" and self.dtype == torch.bfloat16:
            warning = cpu_bf16_warning()
            if warning and warning not in _warned:  # once per process
                _warned.add(warning)
                if log is not None:
                    log.info(warning)
                else:
                    print(warning, file=sys.stderr)
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

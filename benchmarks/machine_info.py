"""What a benchmark ran on: CPU model, cores, threads, GPU, library versions, date."""
import os
import platform
import time

import torch


def cpu_model():
    """The `model name` line of /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_features():
    """CPU instruction sets that decide whether bf16 autocast is fast (native bf16) or emulated."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags}


def describe_machine(device="cpu"):
    """A dict stored with every result file (and printed above every table)."""
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
    }
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
        info["cuda"] = torch.version.cuda
    return info


def machine_line(info):
    """One Markdown line: 'Machine: <cpu>, N cores (T torch threads)[, GPU]; torch X; date'."""
    gpu = f", GPU {info['gpu']} (CUDA {info.get('cuda')})" if info.get("gpu") else ""
    t = info["torch_threads"]
    return (f"Machine: {info['cpu']}, {info['cores']} cores ({t} torch thread{'s' if t != 1 else ''}){gpu}; "
            f"torch {info['torch']}, Python {info['python']}; measured {info['date']}.")


def stats(values):
    """{"min", "median", "max", "n"} of numbers (the median of an even count: mean of the middle two)."""
    v = sorted(float(x) for x in values)
    if not v:
        return {"min": None, "median": None, "max": None, "n": 0}
    n = len(v)
    med = v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
    return {"min": v[0], "median": med, "max": v[-1], "n": n}

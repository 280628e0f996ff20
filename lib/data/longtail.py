"""The exponential long-tail profile of Cao et al. (specs/datasets.md §2.1)."""
import numpy as np


def exponential_counts(n_max, imb_factor, num_classes):
    """n_i = int(n_max * (1/IF)^(i/(C-1))), float64, truncated; class 0 is the largest."""
    if num_classes == 1:
        return [int(n_max)]
    rho = 1.0 / float(imb_factor)
    return [int(float(n_max) * rho ** (i / (num_classes - 1.0))) for i in range(num_classes)]

"""IPython startup file for the portability check: runs in every notebook kernel before its first
cell and changes how float32 results are rounded, the way another CPU family, thread count or
library build would, without changing what is computed:

* convolutions leave oneDNN for PyTorch's own kernels (another summation order),
* matrix products of float32 inputs (every ``nn.Linear``) accumulate in float64 and round once,
* one thread (OMP_NUM_THREADS=1 is set by the test as well).

An output that a notebook checks with ``# NBVAL_CHECK_OUTPUT`` must not change under it.
"""
import os

import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.backends.mkldnn.enabled = False

_linear = F.linear


def _linear_float64(input, weight, bias=None):
    if input.dtype == torch.float32 and weight.dtype == torch.float32:
        out = _linear(input.double(), weight.double(), None if bias is None else bias.double())
        return out.float()
    return _linear(input, weight, bias)


F.linear = _linear_float64
os.environ["ROBUSTNESS_FLOATS_PERTURBED"] = "1"

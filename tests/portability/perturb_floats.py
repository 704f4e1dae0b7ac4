"""IPython startup file for the portability check: runs in every notebook kernel before its first
cell and changes how float results are rounded, the way another CPU family, thread count, BLAS or
oneDNN build, or a GPU would, without changing what is computed:

* convolutions leave oneDNN for PyTorch's own kernels (another summation order), one thread;
* matrix products of float32 inputs (every ``nn.Linear``) accumulate in float64 and round once;
* while TF32 is allowed for cuDNN convolutions (PyTorch's default, ``torch.backends.cudnn.
  allow_tf32``; the bounds turn it off), the output of every ``nn.Conv2d`` module (the models'
  forward passes: predictions, attacks) is multiplied by 1 + d with |d| up to 2^-12 in float32:
  the error of TF32, which recent NVIDIA GPUs then use for float32 convolutions;
* every ``F.conv2d`` / ``F.linear`` output otherwise by 1 + d, |d| up to 8 units in the last place
  of its dtype (2^-20 for float32, 2^-49 for float64). d is a fixed pseudo-random
  function of the value itself, so the same computation still gives the same result twice (as on
  any one machine) and no random stream of the notebook is touched. A sum of n float32 terms
  differs by up to ~sqrt(n) ulps between summation orders, so this is what another machine does to
  a conv over 16 x 4 x 4 inputs or a linear layer over 1568; it reaches the backward pass too.

An output that a notebook checks with ``# NBVAL_CHECK_OUTPUT`` must not change under it.
"""
import os

import torch
import torch.nn.functional as F

torch.set_num_threads(1)
torch.backends.mkldnn.enabled = False

_REL = {torch.float32: 2.0 ** -20, torch.float64: 2.0 ** -49}
_REL_MODULE = {torch.float32: 2.0 ** -12, torch.float64: 2.0 ** -49}


def _jitter(out, table=_REL):
    rel = table.get(out.dtype)
    if rel is None:
        return out
    d = torch.sin(out.detach() * 12345.6789)  # in [-1, 1], a fixed function of the value; no gradient
    return out * (1 + rel * d)


_linear, _conv2d = F.linear, F.conv2d


def _linear_perturbed(input, weight, bias=None):
    if input.dtype == torch.float32 and weight.dtype == torch.float32:
        out = _linear(input.double(), weight.double(), None if bias is None else bias.double()).float()
    else:
        out = _linear(input, weight, bias)
    return _jitter(out)


def _conv2d_perturbed(*args, **kwargs):
    return _jitter(_conv2d(*args, **kwargs))


F.linear = _linear_perturbed
F.conv2d = _conv2d_perturbed



def _tf32_convs() -> bool:
    try:
        return bool(torch.backends.cudnn.allow_tf32)
    except RuntimeError:  # the fp32_precision API is in use (PyTorch >= 2.9)
        return torch.backends.cudnn.conv.fp32_precision == "tf32"


_conv2d_forward = torch.nn.Conv2d.forward
torch.nn.Conv2d.forward = lambda self, input: (_jitter(_conv2d_forward(self, input), _REL_MODULE) if _tf32_convs()
                                               else _conv2d_forward(self, input))
os.environ["ROBUSTNESS_FLOATS_PERTURBED"] = "1"

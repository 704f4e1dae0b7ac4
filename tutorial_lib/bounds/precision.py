"""Arithmetic a certificate can rest on: TF32 off, and float64 passes for float32 models.

A certificate is a claim about the real-valued network (its float32 weights read as exact
numbers): the lower bound of every margin over the ball is > 0. The bound is itself computed in
floating point, and two kinds of rounding can push it above its exact value:

* **TF32.** On NVIDIA GPUs since Ampere, float32 matmuls and convolutions may run on TF32 tensor
  cores (10-bit mantissa, relative rounding ~1e-3, PyTorch's default for cuDNN convolutions).
  :func:`no_tf32` switches TF32 off for matmuls and cuDNN convolutions inside a ``with`` block and
  restores the caller's settings afterwards; every exact bound method (``dual_bounds``,
  ``optimized_dual_bounds``, ``interval_bounds``) runs inside it. ``estimated_dual_bounds`` (random
  projections, training only, not a certificate) keeps the caller's setting.
* **float32 itself.** Sums of thousands of terms in float32 carry relative errors ~1e-6 of their
  largest terms; a margin bound that small can have the wrong sign (tests/
  test_bounds_float_soundness.py builds one). :func:`float64_copy` gives a float64 copy of a model
  (the caller's model untouched), on which ``robust.certified_bounds`` recomputes the bound for
  certification (``certified_error``, ``certified_accuracy_vs_eps``, the certification study).
  float64 leaves errors ~1e-15 of the largest terms, far below any margin the certificates rest
  on. Training keeps float32 (the bounds are a loss there, and float64 costs ~3x on CPU).
"""
from __future__ import annotations

import copy
import functools
from contextlib import contextmanager
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .spec import _LOW_PRECISION

__all__ = ["no_tf32", "without_tf32", "float64_copy"]


@contextmanager
def no_tf32() -> Iterator[None]:
    """Inside: no TF32 in float32 CUDA matmuls (``torch.backends.cuda.matmul.allow_tf32`` False,
    matmul precision 'highest') nor in cuDNN convolutions (``torch.backends.cudnn.allow_tf32``
    False). On exit (also on an exception) the caller's settings come back exactly.

    PyTorch has two APIs for these switches (the ``allow_tf32`` flags with
    ``torch.set_float32_matmul_precision``, and the newer ``fp32_precision`` attributes) and
    refuses to read one after the other was used; the guard uses the one the caller's state
    can be read in. Harmless on CPU (the flags only steer CUDA kernels).
    """
    B = torch.backends
    try:  # the legacy switches (what PyTorch sets by default)
        saved = (B.cuda.matmul.allow_tf32, B.cudnn.allow_tf32, torch.get_float32_matmul_precision())
        legacy = True
    except RuntimeError:  # the caller used the fp32_precision API: stay within it
        saved = (B.cuda.matmul.fp32_precision, B.cudnn.conv.fp32_precision)
        legacy = False
    try:
        if legacy:
            torch.set_float32_matmul_precision("highest")  # = allow_tf32 False, read back consistently
            B.cudnn.allow_tf32 = False
        else:
            B.cuda.matmul.fp32_precision = "ieee"
            B.cudnn.conv.fp32_precision = "ieee"
        yield
    finally:
        if legacy:
            torch.set_float32_matmul_precision(saved[2])
            B.cudnn.allow_tf32 = saved[1]
        else:
            B.cuda.matmul.fp32_precision, B.cudnn.conv.fp32_precision = saved


def without_tf32(fn: Callable) -> Callable:
    """``fn`` run inside :func:`no_tf32`: for the bound methods whose consistency check (the model
    against the composition of its layers) and bound must see full float32 convolutions and
    matmuls on a GPU, where TF32 (10-bit mantissa) would change them by ~1e-3."""
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with no_tf32():
            return fn(*args, **kwargs)
    return wrapper


def float64_copy(model: nn.Module) -> nn.Module:
    """A float64 copy of ``model`` for a certification pass: same modules and mode (train/eval),
    parameters and floating buffers cast to float64 (float32 values are exact in float64), no
    gradients. The caller's model is not changed. A model already in float64 is returned as is.
    float16/bfloat16 models are refused (ValueError), as every bound method refuses them."""
    floats = [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]
    low = [t.dtype for t in floats if t.dtype in _LOW_PRECISION]
    if low:  # the float64 twin would certify the exact network, not the float16 one that runs
        raise ValueError(f"certificates refuse {str(low[0]).replace('torch.', '')} models: the "
                         "model as run rounds and overflows where its float64 copy does not, so a "
                         "certificate of the copy says nothing about it; call model.float() (or "
                         ".double()) first")
    if all(t.dtype == torch.float64 for t in floats):
        return model
    twin = copy.deepcopy(model).to(torch.float64)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin

"""Input checks shared by the attacks, the evaluation and the bounds: refuse what would otherwise
give a silently wrong result or a cryptic torch error.

Each function checks one thing and raises a ``ValueError`` (a bad value or shape) or a
``TypeError`` (a bad type or dtype) whose message names the argument, what was found and, where
there is one, the fix. :func:`check_batch` runs the checks every model input needs, in an order
where each later check can rely on the earlier ones:

1. :func:`check_finite` -- no NaN or inf in x (one NaN pixel turns a whole gradient into NaN);
2. :func:`check_input_dtype` -- x is floating point, of the dtype of the model's weights;
3. :func:`probe_num_classes` -- one forward pass of x[:1] finds the number of classes K, and turns
   a shape mismatch inside the model into an error naming x's shape;
4. :func:`check_labels` -- labels (and targets) are integers of shape (N,) in [0, K).

:func:`check_eps` checks a perturbation budget and warns when it is at least the width of the
input box (in l-inf every point of the box is then reachable: usually 8 typed for 8/255).

This module imports only torch, so that every part of ``tutorial_lib`` (the bounds included) can
use it.
"""
from __future__ import annotations

import math
import numbers
import sys
import warnings
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

__all__ = ["check_finite", "check_input_dtype", "probe_num_classes", "check_labels", "check_eps",
           "check_batch"]

#: How many offending example indices an error message lists before "...".
MAX_LISTED = 5

_CASTS = {torch.float32: "x.float()", torch.float64: "x.double()", torch.float16: "x.half()",
          torch.bfloat16: "x.bfloat16()"}


def _list_indices(indices: Sequence[int], offset: int = 0) -> str:
    shown = ", ".join(str(int(i) + offset) for i in indices[:MAX_LISTED])
    return shown + (", ..." if len(indices) > MAX_LISTED else "")


def _stacklevel() -> int:
    """The stacklevel that points a warning at the first caller outside ``tutorial_lib``."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("tutorial_lib"):
        level += 1
        frame = frame.f_back
    return level


def check_finite(name: str, t: torch.Tensor, offset: int = 0) -> None:
    """Raise ``ValueError`` if the tensor ``t`` (N, ...) holds a NaN or an infinity.

    The message gives the number of NaN and infinite values, the number of examples (rows along
    dim 0) holding them and the first few of their indices, each plus ``offset`` (the index of
    t's first example in a larger data set, e.g. the examples in the batches before this one).
    """
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a tensor, got {type(t).__name__}")
    if not (t.is_floating_point() or t.is_complex()):
        return  # an integer tensor is always finite
    bad = ~torch.isfinite(t)
    if not bad.any():
        return
    n_nan = int(torch.isnan(t).sum())
    n_inf = int(bad.sum()) - n_nan
    kinds = ", ".join(s for s in (f"{n_nan} NaN" if n_nan else "", f"{n_inf} inf" if n_inf else "") if s)
    if t.dim() == 0:
        raise ValueError(f"{name} is not finite ({kinds})")
    rows = bad.reshape(t.shape[0], -1).any(1).nonzero().flatten().tolist()
    raise ValueError(f"{name} has {n_nan + n_inf} non-finite value{'s' if n_nan + n_inf > 1 else ''} "
                     f"({kinds}) in {len(rows)} example{'s' if len(rows) > 1 else ''} "
                     f"(index {_list_indices(rows, offset)}): every result on them would be wrong "
                     f"(NaN gradients, NaN outputs); fix or drop those examples first")


def check_input_dtype(model: nn.Module, x: torch.Tensor) -> None:
    """Raise ``TypeError`` unless x is a floating-point tensor of the dtype of the model's weights.

    The weights' dtype is that of the model's floating parameters (if they share one; a model
    without floating parameters, or with several dtypes, is not checked). The message names both
    dtypes and the cast that fixes it, e.g. "x is float64 but the model's weights are float32:
    call x.float()".
    """
    if not torch.is_tensor(x):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor (inputs, e.g. pixels in [0, 1]), got dtype "
                        f"{x.dtype}; convert it, e.g. x.float() / 255 for 8-bit images")
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(dtypes) != 1:
        return
    (w,) = dtypes
    if x.dtype != w:
        cast = _CASTS.get(w, f"x.to({w})")
        raise TypeError(f"x is {str(x.dtype).replace('torch.', '')} but the model's weights are "
                        f"{str(w).replace('torch.', '')}: call {cast}")


def probe_num_classes(model: nn.Module, x: torch.Tensor) -> Optional[int]:
    """The number of outputs K of ``model``, from one forward pass of x[:1] (N, ...) under
    ``torch.no_grad`` and in eval mode (the model's mode is restored; no random numbers are
    drawn); None if x is empty.

    A ``RuntimeError`` raised by the model (the usual sign of a shape mismatch, "mat1 and mat2
    shapes cannot be multiplied") becomes a ``ValueError`` naming x's shape, chained to the
    original. An output that is not (1, K) logits is refused too. x[:1] is moved to the device of
    the model's parameters; check its dtype first (:func:`check_input_dtype`).
    """
    if x.dim() < 1 or x.shape[0] == 0:
        return None
    sample = x[:1].detach()
    param = next(iter(model.parameters()), None)
    if param is not None:
        sample = sample.to(param.device)
    modes = [(m, m.training) for m in model.modules()]
    if any(training for _, training in modes):
        model.eval()  # dropout would draw random numbers, batch norm would update its statistics
    try:
        with torch.no_grad():
            out = model(sample)
    except RuntimeError as exc:
        raise ValueError(f"x has shape {tuple(x.shape)} (one example: {tuple(x.shape[1:])}) but the model "
                         f"expects another input shape: {exc}") from exc
    finally:
        for m, training in modes:
            m.training = training
    if not torch.is_tensor(out) or out.dim() != 2 or out.shape[0] != 1:
        shape = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ValueError(f"the model maps x[:1] of shape {tuple(sample.shape)} to {shape}; expected "
                         f"logits of shape (1, K): is x of shape (N, ...) with the batch first?")
    return int(out.shape[1])


def check_labels(y: torch.Tensor, n: int, num_classes: Optional[int], name: str = "y",
                 offset: int = 0) -> None:
    """Raise unless ``y`` is an integer tensor of shape (n,) with values in [0, num_classes).

    ``TypeError`` for a non-tensor or a non-integer dtype (bool included); ``ValueError`` for the
    shape or for labels out of range, naming how many and the first few examples (indices plus
    ``offset``, as in :func:`check_finite`). ``num_classes`` None skips the range check.
    """
    if not torch.is_tensor(y):
        raise TypeError(f"{name} must be a tensor of integer class labels, got {type(y).__name__}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer class labels, got dtype {y.dtype}; call {name}.long()")
    if y.dim() != 1 or y.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n},) to match x; got {tuple(y.shape)}")
    if num_classes is None or n == 0:
        return
    bad = ((y < 0) | (y >= num_classes)).nonzero().flatten()
    if len(bad):
        many = len(bad) > 1
        where = f"{len(bad)} example{'s' if many else ''} (index {_list_indices(bad.tolist(), offset)})"
        raise ValueError(f"{name} must lie in [0, {num_classes}) (the model has {num_classes} outputs); "
                         f"{where} {'have' if many else 'has'} {name} = {_list_indices(y[bad].tolist())}")


def check_eps(eps: Union[float, torch.Tensor], clip: Optional[Tuple[float, float]] = (0.0, 1.0),
              norm: str = "linf", name: str = "eps", warn: bool = True) -> Union[float, torch.Tensor]:
    """``eps`` checked: a real number (returned as a float) or a floating tensor (returned, e.g.
    one eps per example for the bounds), finite and >= 0.

    ``TypeError`` if eps is not a number (a string, a bool, None, ...), ``ValueError`` if it is
    NaN, infinite or negative. With ``warn`` and ``norm == "linf"``, a ``UserWarning`` when eps is
    at least the width hi - lo of the box ``clip`` (None: no box): every point of the box is then
    within eps of every input, so the attack or bound says nothing (usually 8 typed for 8/255).
    """
    if torch.is_tensor(eps):
        if not eps.is_floating_point():
            raise TypeError(f"{name} must be a floating tensor, got dtype {eps.dtype}")
        e = eps.detach().reshape(-1)
        value: Union[float, torch.Tensor] = float(eps) if eps.dim() == 0 else eps.detach()
    elif isinstance(eps, numbers.Real) and not isinstance(eps, bool):
        value = float(eps)
        e = torch.tensor([value])
    else:
        raise TypeError(f"{name} must be a number, got {type(eps).__name__} {eps!r}")
    if not torch.isfinite(e).all():
        raise ValueError(f"{name} must be finite, got {eps}")
    if (e < 0).any():
        raise ValueError(f"{name} must be a finite number >= 0, got {eps}")
    if warn and norm == "linf" and clip is not None and e.numel():
        lo, hi = float(clip[0]), float(clip[1])
        width, big = hi - lo, float(e.max())
        if math.isfinite(width) and big >= width:
            fix = f"; did you mean {big:g}/255 = {big / 255:.4f}?" if big / 255 < width else ""
            verb = "exceeds" if big > width else "equals"
            warnings.warn(f"{name} = {big:g} {verb} the width of the input box [{lo:g}, {hi:g}]: every input "
                          f"in the box is reachable{fix}", UserWarning, stacklevel=_stacklevel())
    return value


def check_batch(model: nn.Module, x: torch.Tensor, y: Optional[torch.Tensor] = None,
                target: Optional[torch.Tensor] = None, offset: int = 0) -> Optional[int]:
    """Run the checks every model input needs and return the number of classes K (None if x is
    empty): x a floating tensor (N, ...) with a batch dimension, finite (:func:`check_finite`,
    indices reported plus ``offset``), of the model's dtype (:func:`check_input_dtype`) and shape
    (:func:`probe_num_classes`); y and target, where given, labels (N,) in [0, K)
    (:func:`check_labels`, indices plus ``offset`` too). Costs one forward pass of one example.
    """
    if not torch.is_tensor(x):
        raise TypeError(f"x must be a tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"x must have a batch dimension, shape (N, ...); got {tuple(x.shape)}")
    if y is not None:
        check_labels(y, x.shape[0], None, "y")
    if target is not None:
        check_labels(target, x.shape[0], None, "target")
    check_input_dtype(model, x)
    check_finite("x", x, offset)
    k = probe_num_classes(model, x)
    if y is not None:
        check_labels(y, x.shape[0], k, "y", offset)
    if target is not None:
        check_labels(target, x.shape[0], k, "target", offset)
    return k

"""What every exercise checker shares: run a student's function on fixed cases, catch what goes
wrong, and say it in words a student understands.

A checker is a plain function ``check_<name>(student_fn) -> CheckResult``. It never raises for a
wrong answer (a notebook must run top to bottom with an unfinished exercise): it prints one line
per case and returns a :class:`CheckResult` that tests inspect (``.passed``, ``.problems``).

Writing a checker::

    def check_fgsm_step(student_fn):
        checker = Checker("fgsm_step", student_fn)
        x, y, model = ...                                   # fixed, seeded case
        out = checker.call("a batch of 4 images", model, x, y, eps=0.1)
        if out is not None:                                 # None: the call failed, already reported
            checker.tensor_close("the adversarial images", out, expected, atol=1e-6)
            checker.require((out - x).abs().max() <= 0.1 + 1e-6,
                            "some pixels moved by more than eps: project onto the ball")
        return checker.finish()
"""
from __future__ import annotations

import inspect
import sys
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

__all__ = ["CheckResult", "Checker", "NOT_STARTED"]

NOT_STARTED = "not implemented yet"


@dataclass
class CheckResult:
    """The outcome of one checker run.

    ``passed``: every case right; ``started``: False when the function still raises
    NotImplementedError (the stub as handed out); ``problems``: one sentence per thing that is wrong.
    """

    name: str
    passed: bool
    started: bool = True
    problems: list = field(default_factory=list)
    cases: int = 0

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        if not self.started:
            return f"{self.name}: {NOT_STARTED} (fill in the function above, then run this cell again)"
        if self.passed:
            return f"{self.name}: all {self.cases} checks passed"
        lines = [f"{self.name}: {len(self.problems)} problem(s)"]
        lines += [f"  - {p}" for p in self.problems]
        return "\n".join(lines)

    printed: bool = field(default=False, repr=False, compare=False)

    def _ipython_display_(self):
        """As a cell's last value: the words, unless the checker has just printed them."""
        if not self.printed:
            print(self)


def _code_objects(target) -> dict:
    """The code objects a forbidden target runs, each with whether the target defines it itself
    (a function's own code; a class's methods, inherited ones from tutorial_lib included)."""
    if inspect.isclass(target):
        codes = {}
        for klass in reversed(target.__mro__):
            if klass.__module__.split(".")[0] != "tutorial_lib":
                continue
            for member in vars(klass).values():
                if isinstance(member, (staticmethod, classmethod)):
                    member = member.__func__
                if isinstance(member, property):
                    member = member.fget
                member = inspect.unwrap(member) if callable(member) else member
                if hasattr(member, "__code__"):
                    codes[member.__code__] = klass is target
        return codes
    if callable(target) and hasattr(inspect.unwrap(target), "__code__"):
        return {inspect.unwrap(target).__code__: True}
    raise TypeError(f"cannot forbid {target!r}: give a function or a class of tutorial_lib")


class Checker:
    """Collects the checks of one exercise. ``verbose=False`` keeps it quiet (tests).

    ``forbid``: library functions or classes whose use would answer the exercise by one call
    (e.g. the attack the exercise asks the student to write). While the student's function runs,
    a profiler watches for their code; a call to any of them fails the case, in words, whatever
    name the student imported it under.
    """

    def __init__(self, name: str, student_fn: Callable, verbose: bool = True, forbid=()):
        if not callable(student_fn):
            raise TypeError(f"check_{name} expects your function itself, e.g. check_{name}({name}), "
                            f"not {type(student_fn).__name__}")
        self.name, self.fn, self.verbose = name, student_fn, verbose
        self.problems: list = []
        self.cases = 0
        self.started = True
        self._forbidden = {}
        owners = set()  # a code defined by one forbidden target is named after it, not after its subclasses
        for target in forbid:
            codes = _code_objects(target)
            label = f"{target.__module__}.{target.__qualname__}"
            for code, own in codes.items():
                if own or code not in owners:
                    self._forbidden[code] = label
                if own:
                    owners.add(code)

    def _run(self, args, kwargs, seen: list):
        """The student's call; with forbidden targets, watched by a profiler (calls only) that
        appends the label of every forbidden target it sees to ``seen``, in call order."""
        if not self._forbidden:
            return self.fn(*args, **kwargs)
        previous = sys.getprofile()

        def watch(frame, event, arg):
            if event == "call" and frame.f_code in self._forbidden:
                seen.append(self._forbidden[frame.f_code])

        sys.setprofile(watch)
        try:
            return self.fn(*args, **kwargs)
        finally:
            sys.setprofile(previous)

    def call(self, case: str, *args, **kwargs) -> Any:
        """Run the student's function on one case; None when it raised (the reason is recorded)."""
        if not self.started:
            return None
        used: list = []
        try:
            with torch.no_grad() if kwargs.pop("_no_grad", False) else _nullcontext():
                out = self._run(args, kwargs, used)
            if not used:
                return out
        except NotImplementedError:
            if not used:
                self.started = False
        except Exception as err:  # the student's bug, reported in words (unless a forbidden call explains it)
            if not used:
                where = traceback.extract_tb(err.__traceback__)[-1]
                self.problems.append(f"on {case}, your function raised {type(err).__name__}: {err} "
                                     f"(line {where.lineno}: `{(where.line or '').strip()}`)")
        if used:
            self.problems.append(
                f"on {case}, your function calls the library's own {used[0]}: this exercise "
                f"asks you to write that part yourself (the checker compares your version with the library's)")
        return None

    def require(self, condition, problem: str) -> bool:
        """Record ``problem`` unless ``condition`` holds."""
        self.cases += 1
        ok = bool(condition)
        if not ok:
            self.problems.append(problem)
        return ok

    def tensor_close(self, what: str, got, expected: torch.Tensor, atol: float = 1e-5,
                     rtol: float = 1e-4) -> bool:
        """Compare a returned tensor with the expected one: type, shape, then values."""
        self.cases += 1
        if not isinstance(got, torch.Tensor):
            self.problems.append(f"{what}: expected a torch.Tensor, got {type(got).__name__}")
            return False
        if tuple(got.shape) != tuple(expected.shape):
            self.problems.append(f"{what}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
            return False
        got = got.detach().to(expected.device, expected.dtype)
        if not torch.isfinite(got).all():
            self.problems.append(f"{what}: contains NaN or inf")
            return False
        if not torch.allclose(got, expected, atol=atol, rtol=rtol):
            diff = (got - expected).abs().max().item()
            self.problems.append(f"{what}: values differ from the expected ones (largest difference "
                                 f"{diff:.3g}, allowed {atol:g})")
            return False
        return True

    def finish(self) -> CheckResult:
        result = CheckResult(self.name, passed=self.started and not self.problems, started=self.started,
                             problems=list(self.problems) if self.started else [], cases=self.cases)
        if self.verbose:
            print(result)
            result.printed = True
        return result


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False

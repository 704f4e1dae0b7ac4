"""tutorial_lib: the support package of the robustness notebooks.

Modules: ``data`` (datasets), ``models`` (the papers' networks), ``training`` (one loop),
``attacks`` (FGSM, PGD, evaluation), ``checkpoints`` (verified weights), ``train`` (recipes CLI),
``plots`` and ``widgets`` (figures and notebook explorers).
"""
__version__ = "0.1.0"

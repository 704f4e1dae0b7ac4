"""tutorial_lib: the support package of the robustness notebooks.

The reusable core:

* :mod:`.data`         MNIST / Fashion-MNIST / CIFAR-10 as tensors in [0, 1], verified loading
* :mod:`.models`       the papers' networks (plain ``nn.Sequential``, normalisation inside)
* :mod:`.checkpoints`  shipped weights: save / load, SHA-256 registry
* :mod:`.runtime`      device, seeds, eval mode, distributed rank, prediction and accuracy
* :mod:`.training`     the one loop (``fit``), the one loss registry (``LOSSES``), recipes
* :mod:`.attacks`      FGSM, PGD, margin PGD, transfer, JSMA, Carlini-Wagner, evaluation
* :mod:`.defenses`     PGD training, TRADES, certified training, defensive distillation (losses)
* :mod:`.cascade_model` a cascade of certified models as a classifier (routing by the bounds)
* :mod:`.bounds`       certification: interval, dual network, LP, MILP, robust loss

What serves one notebook: :mod:`.studies` (capacity, tradeoff, polytope, distillation study,
report), :mod:`.viz` (plots and widgets) and :mod:`.exercises` (the checkers of the notebooks'
exercises, ``check_<name>(student_fn)``). Command lines: ``python -m tutorial_lib.train``,
``python -m tutorial_lib.report``, ``python -m tutorial_lib.studies.capacity``,
``python -m tutorial_lib.data``.
"""
__version__ = "0.1.0"

"""What serves one notebook: the studies that reproduce a paper's experiment or figure.

* :mod:`.capacity`            notebook 02: capacity sweep (``python -m tutorial_lib.studies.capacity``)
* :mod:`.tradeoff`            notebook 03: the 2-D TRADES toy and its explorer
* :mod:`.polytope`            notebook 04: the 2-D polytope explorer and the certification table
* :mod:`.distillation_study`  notebook 06: why distillation looks robust (saturation, gradients)
* :mod:`.report`              the README's robustness table (``python -m tutorial_lib.report``)

They build on the core packages (data, models, training, attacks, defenses, bounds); nothing in
the core imports them.
"""

"""What serves one notebook: the studies that reproduce a paper's experiment or figure.

* :mod:`.capacity`            notebook 02: capacity sweep (``python -m tutorial_lib.studies.capacity``)
* :mod:`.madry_table`         notebook 02: Madry et al.'s attack table (``python -m tutorial_lib.studies.madry_table``)
* :mod:`.tradeoff`            notebook 03: the 2-D TRADES toy and its explorer
* :mod:`.polytope`            notebook 04: the 2-D polytope explorer and the certification table
* :mod:`.distillation_study`  notebook 06: why distillation looks robust (saturation, gradients)
* :mod:`.projections`         notebook 07: random projections measured (estimate error, unsound share, step time)
* :mod:`.cascade_toy`         notebook 08: the 2-D toy cascade (regions, unsound spots) and its explorer
* :mod:`.cascade_eval`        notebook 08: the MNIST cascade's certificates and the cascade attack
  (``python -m tutorial_lib.studies.cascade_eval``)
* :mod:`.report`              the README's robustness table (``python -m tutorial_lib.report``)
* :mod:`.capstone`            notebook 09: the ensemble tables, their lessons, the explorer's attacks

They build on the core packages (data, models, training, attacks, defenses, bounds); nothing in
the core imports them.
"""

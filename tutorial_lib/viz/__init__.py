"""Figures and notebook widgets. Widgets are thin: every slider calls a plain, tested function.

* :mod:`.plots`               figures shared by several notebooks
* :mod:`.widgets`             the explorers: attacks (01), cascades (08), evaluation (09)
* :mod:`.distillation_plots`  the figures and the temperature explorer of notebook 06
* :mod:`.cascade_plots`       notebook 08: the 2-D toy cascade's regions, its unsound spots, one point's box
* :mod:`.tables`              `Table`: a notebook table as HTML, with aligned text as its plain form (nbval)
"""

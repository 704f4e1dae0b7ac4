"""Figures and notebook widgets. Widgets are thin: every slider calls a plain, tested function.

* :mod:`.plots`               figures shared by several notebooks
* :mod:`.widgets`             the attack explorer of notebook 01
* :mod:`.distillation_plots`  the figures and the temperature explorer of notebook 06
"""

"""Reference solutions of the notebooks' implement exercises (for instructors and the tests).

One module per notebook, ``nbXX_<topic>.py``, each function named as the exercise's stub.
``make student`` leaves this folder out and drops the notebook cells tagged ``solution``.
"""

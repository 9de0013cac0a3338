"""fimkit's experiment layer: LLaMA models, an offline text pipeline, training and comparisons.

Entry points are the ``fimkit train | compare | demo | data`` sub-commands (``experiments.cli``).
This package imports ``fimkit``; ``fimkit`` never imports it.
"""

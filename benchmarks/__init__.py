"""fimkit's benchmarks (``fimkit bench``): optimizer step time and memory against torch's Adam.

Outside the library: ``fimkit`` never imports this package; the CLI finds ``bench`` through
the ``fimkit.commands`` entry point. Results worth keeping go to ``benchmarks/results/``.
"""

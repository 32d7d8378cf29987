"""The outcome of a comparison: what follows from its run records, and nothing that shows it.

This room never imports the report (``tests/test_architecture.py`` checks it): a report is
made from results, :class:`~dasktrain.harness.Results` (the report room's) adds the text and
the files. The modules stand in layers; each imports only modules of the layers below its own:

1. ``outcome``
   :class:`~dasktrain.harness.results.outcome.Outcome`: the runs, the settings, and every
   table and answer derived from them, built once on first use.
2. ``analysis``, ``verdicts``
   Strong scaling, the setups side by side and the whole cost; one sentence per workload,
   saying only what was measured, and the crossovers.
3. ``answer``, ``printable``, ``tables``
   The answer's first lines (the overall answer, the machine's state); the DataFrame that
   prints whole; the medians, ranges, speedup, efficiency and cost at every size.
"""

"""Results shown: the text a terminal prints, the files, the offline HTML page.

The modules stand in layers; each imports only modules of the layers below its own:

1. ``shown``
   :class:`~dasktrain.harness.Results`: the outcome with ``to_string``, ``save`` and
   ``from_runs``.
2. ``page``
   Results -> one self-contained HTML page (bokeh, inline), in reading order.
3. ``curves``, ``run_curves``
   The page's curves: time against size, scaling, resource timelines; the DDP ranks' and
   fits' curves from inside the runs.
4. ``figures``, ``output``, ``text``
   The bar charts; the output folder (checked first, written atomically, never through a
   link; ``runs.jsonl`` appended run by run); the text a terminal prints.
"""

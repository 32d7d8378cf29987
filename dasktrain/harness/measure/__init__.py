"""What one run measured: resources, where its time went, the machine's quiet, its record.

The modules stand in layers; each imports only modules of the layers below its own:

1. ``monitor``, ``records``
   :class:`~dasktrain.harness.ResourceMonitor` schedules the readers and ``summarize()``
   turns their samples into figures (apart from sampling, as in distributed's
   ``MemorySampler``); :class:`~dasktrain.harness.RunRecord`, what one run measured, and
   the ``runs`` table made of such records.
2. ``_energy``
   The monitor's energy reader (RAPL and NVML counters), which makes the samples of
   ``_sources``.
3. ``_sources``, ``breakdown``, ``machine``
   The monitor's readers (psutil process tree, Dask worker monitors);
   each dask run in its ``distributed.span`` and its time split from the task stream into
   start-up, transfer, scheduler/idle and compute (:func:`~dasktrain.harness.phase` marks a
   workload's own); this machine's quiet (a busy one waited for, then refused unless
   allowed; a run over ``BUSY_CPU_PERCENT`` of other programs is *busy*).
"""

"""Plan and run: :func:`~dasktrain.harness.compare` from its options to its records.

The modules stand in layers; each imports only modules of the layers below its own:

1. ``runner``
   :func:`~dasktrain.harness.compare`: every option checked, the setups opened, a quiet
   machine waited for, the comparison handed over and the setups closed at the end.
2. ``comparison``
   One comparison while it runs: the inputs of each size, the warm-up, the timed repeats
   interleaved over the setups (A B A B), each record kept as it finishes (``runs.jsonl``
   too), then the :class:`~dasktrain.harness.Results`.
3. ``plan``, ``timing``
   Every option of :func:`~dasktrain.harness.compare` checked before anything is measured;
   one timed run (thread limits of the local engine, the time limit, the monitor, the
   record; an ``OptionalDependencyError`` or ``Unavailable`` becomes an ``unavailable`` row).
4. ``setups``
   The local engine and the clusters of ``clusters=``: checked, connected or started, closed.
5. ``spark_setup``
   The Spark session of a comparison (the user's, or a ``local[N]`` one started and stopped).
6. ``live``, ``progress``, ``quiet``
   The grid of runs and the verdicts told to the ``/dasktrain`` dashboard page as they
   happen (and the events each run keeps for the report); the progress bar or callback;
   library output sent to a log file.
"""

"""What a comparison runs: the built-in workloads and the data they share.

The modules stand in layers; each imports only modules of the layers below its own:

1. ``builtin``
   The built-in workloads (``read``, ``features``, ``kmeans``, ``xgboost``, ``logreg``,
   ``naive_bayes``, ``mlp_cv``, ...), :class:`~dasktrain.harness.Workload` and the names a
   comparison accepts.
2. ``ddp``, ``inputs``, ``spark``
   The three trained by a launcher (``ddp_cnn``, ``keras_cnn``, ``tf_cnn``); the data the
   workloads of one size share, built outside every timing; the Spark twins of the
   built-ins. A workload imports what it runs inside its function, so naming the harness
   imports no scikit-learn, xgboost or torch.
"""

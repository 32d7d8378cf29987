"""What a TensorFlow rank reads beyond the DDP contract (:mod:`dasktrain.ddp._env`).

=================================  ==========================================================
variable                           meaning
=================================  ==========================================================
``DASKTRAIN_TF_KEY``               hex: the job's key for the rendezvous at ``MASTER_PORT``
``DASKTRAIN_TF_COLLECTIVE_TIMEOUT``  seconds a collective waits for its peers
``TF_CONFIG``                      TensorFlow's own: set by the rank after the rendezvous
``KERAS_BACKEND``                  ``tensorflow`` unless ``env=`` says otherwise
=================================  ==========================================================

Kept apart from :mod:`dasktrain.ddp._tf_rank` so that the launcher never imports the module that
``python -m`` runs.
"""

ENV_KEY = "DASKTRAIN_TF_KEY"
ENV_COLLECTIVE_TIMEOUT = "DASKTRAIN_TF_COLLECTIVE_TIMEOUT"
TF_CONFIG = "TF_CONFIG"

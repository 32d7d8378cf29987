"""TensorFlow multi-worker training on Dask workers, and its one-process local twin.

``run(train_fn, ...)`` starts one process per selected Dask worker (supervised as the ranks of
:func:`dasktrain.ddp.run` are), writes each one's ``TF_CONFIG`` and calls ``train_fn`` inside
the scope of a ready ``tf.distribute.MultiWorkerMirroredStrategy`` with collective timeouts;
it returns ``{rank: value}`` (a :class:`~dasktrain.ddp.DDPResult`). ``run_local(train_fn,
...)`` runs the same function in this process. Inside ``train_fn`` use
``tf.distribute.get_strategy()``, :func:`task_info`, :func:`save_weights` /
:func:`load_weights` and :func:`dasktrain.ddp.report`; ``keras.Model.fit`` is refused
(``FIT_REFUSED`` says why). :func:`dasktrain.tf.recipes.train_cnn` is a ready loop.

For Keras models without TensorFlow's strategy, :func:`dasktrain.ddp.run` trains them on the
torch backend (:mod:`dasktrain.ddp.recipes_keras`). Importing this package does not import
TensorFlow.

Note for developers: this room is the public face only. The work is done in the ``ddp`` room
(``tf_launcher``, ``tf_context``, ``tf_recipes`` and the private ``_tf_rank``, ``_tf_env``,
``_tf_net``), beside the rank supervision it shares with :func:`dasktrain.ddp.run`.
"""

from ..ddp.tf_context import FIT_REFUSED, FitRefusedError, load_weights, save_weights, task_info
from ..ddp.tf_launcher import run, run_local

__all__ = [
    "run",
    "run_local",
    "task_info",
    "save_weights",
    "load_weights",
    "FIT_REFUSED",
    "FitRefusedError",
]

"""``datasets=`` of :func:`~dasktrain.ddp.run` and :func:`~dasktrain.ddp.run_local`, on the
client: each dataset checked and described chunk by chunk as a :class:`Feed`.

A dataset is an ``ImageSet`` of the dask engine (lazy or persisted), a dask array, a dask
DataFrame, or a tuple of them with the same row chunks (``(X, y)``). Nothing of it is computed
here: the client only reads the graph. A :class:`Feed` holds

* per chunk, the keys of its parts (``X`` and ``y`` of chunk ``i``) and the part of the graph
  that makes them (the chunk's own tasks: a lazy ``ImageSet`` chunk is its file names and
  one ``read-images`` task), so a worker can decode a chunk without the scheduler;
* the persisted keys (``client.persist``) a chunk reads: they are fetched from the cluster,
  from the worker's own memory when it holds them;
* the rows of each chunk and the shape and dtype of a row of each part.

The feed is pickled once per attempt and scattered to the job's workers (never into a graph
of its own, never through the ranks); the ranks get :meth:`Feed.meta`, a few numbers per
chunk, among them :meth:`Feed.owners`: which rank's worker holds each persisted chunk.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from .._dask import compute_all, row_chunked, row_keys, wait_for
from .._validation import is_dask_collection
from ..exceptions import ValidationError

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

__all__ = ["Feed", "prepare", "pack", "held_futures"]

# Bytes of a pickled feed above which a dataset holds its data in the graph (a dask array
# made from an in-memory numpy array): it would go to every worker. Its file names and labels
# (a lazy ImageSet of 100,000 images: about 10 MB) stay well below.
GRAPH_LIMIT = 32 * 2**20

KINDS = ("array", "frame", "series")


@dataclasses.dataclass
class Feed:
    """One dataset of a job, chunk by chunk: what a worker needs to produce any chunk of it.

    Attributes
    ----------
    name : str
    kinds : tuple of {"array", "frame", "series"}
        What each part is (``(X, y)``: two parts).
    graph : dict
        The tasks that make the chunks (persisted keys left out).
    keys : list of tuple
        Per chunk, the key of each part.
    needs : list of tuple
        Per chunk, the keys of ``graph`` its parts are made from.
    external : list of tuple
        Per chunk, the persisted keys it reads from the cluster.
    rows : list of int
    shapes, dtypes : list
        Shape of one row and dtype of each part, as the ranks receive them.
    classes : list of str or None
        An ImageSet's class names.
    """

    name: str
    kinds: tuple
    graph: dict
    keys: list
    needs: list
    external: list
    rows: list
    shapes: list
    dtypes: list
    classes: list | None = None
    # key -> Future of every persisted key the chunks read (client side only: who holds which
    # chunk; published for the workers' feeders, see held_futures)
    futures: dict = dataclasses.field(default_factory=dict, repr=False)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["futures"] = {}  # futures stay with the client that holds the data
        return state

    @property
    def label(self):
        return f"datasets[{self.name!r}]"

    def owners(self, client, addresses):
        """Per chunk, the rank (index in ``addresses``) whose worker holds it, else -1."""
        owners = [-1] * len(self.rows)
        held = [(i, self.futures[k[0]]) for i, k in enumerate(self.keys) if k[0] in self.futures]
        if not held or client is None:
            return owners
        who = client.who_has([f for _, f in held])
        rank_of = {a: r for r, a in enumerate(addresses)}
        for i, future in held:
            ranks = [rank_of[a] for a in who.get(future.key, ()) if a in rank_of]
            owners[i] = min(ranks) if ranks else -1
        return owners

    def meta(self, owners=None):
        """What the ranks need to plan their epochs (JSON-able, a few numbers per chunk)."""
        return {
            "rows": [int(r) for r in self.rows],
            "owners": list(owners) if owners is not None else [-1] * len(self.rows),
            "shapes": [list(s) for s in self.shapes],
            "dtypes": list(self.dtypes),
            "kinds": list(self.kinds),
            "classes": self.classes,
        }


def _kind(value):
    if not is_dask_collection(value):
        return None
    if hasattr(value, "chunks") and hasattr(value, "ndim"):
        return "array"
    if hasattr(value, "npartitions"):
        # by ndim: a dask Series answers to .columns too (dask-expr)
        return {2: "frame", 1: "series"}.get(getattr(value, "ndim", None))
    return None


def _not_dask(value, label):
    what = type(value).__name__
    fix = (
        "a dataset is an ImageSet read with engine='dask', a dask array, a dask DataFrame, "
        "or a tuple of them, e.g. (X, y)"
    )
    if is_dask_collection(value):  # a bag, a delayed object...
        return ValidationError(f"{label} is a dask {what}, which a shard cannot read; {fix}.")
    if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
        fix = (
            "it is held in this process: pass it to train_fn as an argument instead, or make "
            "it a dask collection first (read_images(..., engine='dask'), or "
            "client.persist(dask.array.from_array(X, chunks=256)) once)"
        )
    return ValidationError(f"{label} is a {what}, not a dask collection; {fix}.")


def _parts(value, label):
    """``(parts, labels, classes)`` of one dataset value."""
    if hasattr(value, "X") and hasattr(value, "y") and hasattr(value, "classes"):
        if not is_dask_collection(value.X):
            raise ValidationError(
                f"{label} is an ImageSet read with engine='local' (numpy, in this process); "
                "read it with engine='dask' so that each rank streams its own chunks, or "
                "pass its X and y to train_fn as arguments."
            )
        y = value.y
        if not is_dask_collection(y):
            import dask.array as da

            y = da.from_array(np.asarray(y), chunks=(value.X.chunks[0],))
        return [value.X, y], [f"{label}.X", f"{label}.y"], list(value.classes)
    if isinstance(value, (tuple, list)):
        if not value:
            raise ValidationError(f"{label} is an empty {type(value).__name__}; pass (X, y).")
        return list(value), [f"{label}[{i}]" for i in range(len(value))], None
    return [value], [label], None


def _row_shape_and_dtype(part, kind, label):
    if kind == "array":
        if part.dtype == object or part.dtype.kind not in "biuf":
            raise ValidationError(
                f"{label} has dtype {part.dtype}; a shard hands tensors to torch: use numbers."
            )
        return tuple(part.shape[1:]), str(part.dtype)
    dtypes = [part.dtypes] if kind == "series" else list(part.dtypes)
    bad = [str(d) for d in dtypes if getattr(d, "kind", "O") not in "biuf"]
    if bad:
        raise ValidationError(
            f"{label} has non-numeric column dtypes {bad}; select or encode the numeric "
            "columns first (e.g. df[cols].astype('float32'), series.cat.codes)."
        )
    if kind == "frame":
        return (len(part.columns),), "float32"  # one float32 feature vector per row
    return (), "int64" if part.dtype.kind in "biu" else "float32"


def _check_parts(parts, labels):
    """``(parts, kinds)``: dask collections with the same number of row chunks."""
    kinds = []
    for i, (part, label) in enumerate(zip(parts, labels)):
        kind = _kind(part)
        if kind is None:
            raise _not_dask(part, label)
        if kind == "array":
            # whole rows per chunk (rechunked lazily when also chunked along other axes)
            part = row_chunked(part, name=label)
            if part.ndim == 0:
                raise ValidationError(f"{label} is a 0-d array; it needs rows.")
        else:
            part = part.optimize()  # the keys and the graph of one lowered expression
        parts[i] = part
        kinds.append(kind)
    counts = [p.numblocks[0] if k == "array" else p.npartitions for p, k in zip(parts, kinds)]
    if len(set(counts)) > 1:
        raise ValidationError(
            f"{', '.join(labels)} have {counts} row chunks (partitions); they must be aligned: "
            "the same number of chunks with the same rows (e.g. y = y.rechunk({0: X.chunks[0]}),"
            " or build both from one DataFrame with the same partitions)."
        )
    arrays = [i for i, k in enumerate(kinds) if k == "array"]
    if arrays:
        ref = parts[arrays[0]].chunks[0]
        for i in arrays[1:]:
            if parts[i].chunks[0] != ref:
                parts[i] = parts[i].rechunk({0: ref})  # same count, other sizes: align lazily
    return parts, tuple(kinds)


def _rows(parts, kinds, client, label):
    """Rows per chunk: an array's chunks, else the partition lengths (counted on the cluster)."""
    for part, kind in zip(parts, kinds):
        if kind == "array":
            return [int(r) for r in part.chunks[0]]
    logger.info("%s: counting the rows of each partition", label)
    (lengths,) = compute_all([parts[0].map_partitions(len)], client=client)
    return [int(n) for n in np.asarray(lengths)]


def _closure(dsk, key, external):
    """The keys of ``dsk`` that make ``key``, and the persisted keys it reads."""
    from dask.core import get_dependencies

    need, ext, stack, seen = [], [], [key], set()
    while stack:
        k = stack.pop()
        if k in seen:
            continue
        seen.add(k)
        if k in external:
            ext.append(k)
            continue
        need.append(k)
        stack.extend(get_dependencies(dsk, k))
    return need, ext


def _describe(name, parts, kinds, labels, classes, rows, client):
    from distributed import futures_of

    dsk, keys = {}, []
    for part, kind in zip(parts, kinds):
        dsk.update(part.__dask_graph__())
        keys.append(row_keys(part) if kind == "array" else list(part.__dask_keys__()))
    futures = {f.key: f for part in parts for f in futures_of(part)}
    if futures and client is not None:
        wait_for(client, list(futures.values()), what=f"ddp datasets[{name!r}]")
    chunk_keys = list(zip(*keys))
    needs, external = [], []
    for ck in chunk_keys:
        need, ext = set(), set()
        for k in ck:
            n, e = _closure(dsk, k, futures)
            need.update(n)
            ext.update(e)
        needs.append(tuple(need))
        external.append(tuple(ext))
    graph = {k: dsk[k] for n in needs for k in n}
    shapes, dtypes = zip(
        *(_row_shape_and_dtype(p, k, lab) for p, k, lab in zip(parts, kinds, labels))
    )
    read = {k for ext in external for k in ext}
    held = {k: f for k, f in futures.items() if k in read}
    return Feed(
        name, kinds, graph, chunk_keys, needs, external, rows, list(shapes), list(dtypes),
        classes, held,
    )  # fmt: skip


def prepare(datasets: Mapping[str, Any] | None, client: Client | None = None) -> dict[str, Feed]:
    """``{name: Feed}`` of the ``datasets=`` argument (``{}`` for None).

    Parameters
    ----------
    datasets : dict of str -> dataset, or None
    client : distributed.Client, optional
        Where persisted datasets live (and DataFrame partitions are counted).

    Raises
    ------
    ValidationError
        Not a dict, a name that is not a non-empty string, a value that is not a dask dataset
        (numpy in this process, an ImageSet of the local engine), parts with unaligned
        chunks, unknown chunk sizes, non-numeric data, an empty dataset.
    """
    if datasets is None:
        return {}
    if not isinstance(datasets, dict) or not datasets:
        raise ValidationError(
            f"datasets={datasets!r} must be a non-empty dict {{name: dataset}}, e.g. "
            "{'train': images_train, 'val': images_val}."
        )
    feeds: dict[str, Feed] = {}
    for name, value in datasets.items():
        if not isinstance(name, str) or not name:
            raise ValidationError(f"datasets has the name {name!r}; names are non-empty strings.")
        label = f"datasets[{name!r}]"
        parts, labels, classes = _parts(value, label)
        parts, kinds = _check_parts(parts, labels)
        rows = _rows(parts, kinds, client, label)
        if sum(rows) == 0:
            raise ValidationError(f"{label} has no rows.")
        feeds[name] = _describe(name, parts, kinds, labels, classes, rows, client)
    return feeds


def pack(feeds):
    """The feeds pickled once, for the workers; raises when a dataset carries its data."""
    import cloudpickle

    blob = cloudpickle.dumps(feeds)
    if len(blob) > GRAPH_LIMIT:
        sizes = {n: len(cloudpickle.dumps(f)) for n, f in feeds.items()}
        big = max(sizes, key=sizes.get)
        raise ValidationError(
            f"datasets[{big!r}] carries {sizes[big] / 2**20:.0f} MiB in its graph (more than "
            f"{GRAPH_LIMIT / 2**20:.0f} MiB): it was made from data held in this process "
            "(dask.array.from_array of a numpy array?). Persist it on the cluster once "
            "(X, y = client.persist([X, y])) so each rank reads its chunks from the workers."
        )
    return blob


def held_futures(feeds):
    """The futures of every persisted key the feeds read, for ``client.publish_dataset``.

    A worker cannot make a usable future from a key alone (``Future(key, client)`` no longer
    tells the scheduler that the worker's client wants it, so it never completes):
    ``get_dataset`` hands the feeder futures that the scheduler knows of.
    """
    return [f for feed in feeds.values() for f in feed.futures.values()]

"""tf.distribute strategies for training: one device, several local devices, several machines.

- ``default``: TensorFlow's default strategy (one device).
- ``mirrored``: ``tf.distribute.MirroredStrategy`` over every visible GPU, or over the
  logical CPU devices when there is no GPU (``$TFRNN_CPU_DEVICES=N`` splits the CPU into N,
  to try multi-device training on one machine).
- ``multi-worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` configured from
  ``$TF_CONFIG``, as TensorFlow documents; every worker runs the same command.

Keras splits each global batch across the replicas and aggregates the metrics; tfrnn's
pipelines shard by data (``AutoShardPolicy.DATA``); only the chief writes the run folder.
"""

from __future__ import annotations

import json
import os

from tfrnn.config import env_seconds
from tfrnn.errors import ConfigError

STRATEGIES = ("default", "mirrored", "multi-worker")
CPU_DEVICES_ENV = "TFRNN_CPU_DEVICES"
#: How long a multi-worker task waits for the others (seconds).
PEER_TIMEOUT_ENV = "TFRNN_PEER_TIMEOUT"


def split_cpu() -> None:
    """Split the CPU into ``$TFRNN_CPU_DEVICES`` logical devices (before TensorFlow starts)."""
    import tensorflow as tf

    n = os.environ.get(CPU_DEVICES_ENV)
    if not n:
        return
    if not n.isdigit() or int(n) < 1:
        raise ConfigError(f"${CPU_DEVICES_ENV} must be a positive integer, got {n!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * int(n))
    except RuntimeError:  # TensorFlow already started in this process
        if len(tf.config.list_logical_devices("CPU")) != int(n):
            raise ConfigError(f"${CPU_DEVICES_ENV} can only take effect before TensorFlow starts") from None


def make_strategy(name: str):
    """The ``tf.distribute`` strategy called ``name`` (see the module doc)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ConfigError(f"unknown strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        split_cpu()
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        devices = devices or [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices=devices)
    peers = cluster_peers()
    return wait_for_peers(tf.distribute.MultiWorkerMirroredStrategy, peers, peer_timeout())


def cluster_peers() -> list[str]:
    """The other tasks' addresses in ``$TF_CONFIG``, after checking it names this task."""
    cluster = os.environ.get("TF_CONFIG")
    if not cluster:
        raise ConfigError("--strategy multi-worker needs $TF_CONFIG (the cluster and this worker's task)")
    try:
        config = json.loads(cluster)
        task, jobs = config["task"], config["cluster"]
        kind, index = task["type"], int(task["index"])
        addresses = jobs[kind]
    except (ValueError, KeyError, TypeError):
        raise ConfigError("$TF_CONFIG must be JSON with 'cluster' and 'task': {'type', 'index'}") from None
    if not 0 <= index < len(addresses):
        raise ConfigError(
            f"$TF_CONFIG's task index {index} is outside its cluster ({len(addresses)} {kind} task(s))"
        )
    return [a for job, tasks in jobs.items() for i, a in enumerate(tasks) if (job, i) != (kind, index)]


def peer_timeout() -> float:
    """Seconds to wait for the other workers: ``$TFRNN_PEER_TIMEOUT`` (300)."""
    return env_seconds(PEER_TIMEOUT_ENV, 300)


def wait_for_peers(create, peers: list[str], timeout: float):
    """``create()`` (which waits for every peer to join), said aloud, bounded by ``timeout``
    and stoppable with Ctrl-C or SIGTERM.

    TensorFlow waits for the cluster inside C++ without letting Python run (no signal
    handler, no other thread), so: SIGINT and SIGTERM take their default action (end the
    process) while it waits, and a forked watchdog process ends it with one line when the
    peers have not joined in time.
    """
    import select
    import signal
    import sys

    print(f"waiting for the other workers ({', '.join(peers)}), up to {timeout:g} s...", flush=True)
    sys.stderr.flush()
    ready_r, ready_w = os.pipe()
    parent = os.getpid()
    watchdog = os.fork()
    if watchdog == 0:  # the watchdog: no TensorFlow here, only a pipe, a clock and a kill
        os.close(ready_w)
        if not select.select([ready_r], [], [], timeout)[0]:
            os.write(
                2,
                f"tfrnn: error: the other workers ({', '.join(peers)}) did not join within "
                f"{timeout:g} s (${PEER_TIMEOUT_ENV} sets how long): start them with the same "
                "command\n".encode(),
            )
            os.kill(parent, signal.SIGKILL)
        os._exit(0)
    os.close(ready_r)
    saved = {sig: signal.signal(sig, signal.SIG_DFL) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return create()
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        os.close(ready_w)  # tells the watchdog to stand down
        os.waitpid(watchdog, 0)


def is_chief(strategy) -> bool:
    """True unless this process is a non-chief worker of a multi-worker cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    cluster = resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def is_multi_worker(strategy) -> bool:
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def prepare_multi_worker(model, local_batch) -> None:
    """Work around Keras 3's ``fit`` under ``MultiWorkerMirroredStrategy`` (keras#20585).

    Keras 3.15 (a) builds the model from the first batch reduced across workers in eager
    mode, which fails for ``PerReplica`` values, and (b) averages each scalar log with
    ``strategy.reduce(..., axis=0)``, which fails for 0-d tensors. Here the model is built
    from a local batch instead, and scalar logs are averaged over all replicas of all
    workers (``axis=None``): training itself (gradients all-reduced by TensorFlow) is
    untouched. Remove once Keras fixes multi-worker ``fit``.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if not getattr(original, "_tfrnn_multi_worker", False):

        def reduce_per_replica(values, strategy, reduction="auto"):
            if tf_trainer._collective_all_reduce_multi_worker(strategy) and reduction in ("auto", "mean"):
                import tensorflow as tf

                return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
            return original(values, strategy, reduction)

        reduce_per_replica._tfrnn_multi_worker = True
        tf_trainer.reduce_per_replica = reduce_per_replica
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: model._symbolic_build(
        data_batch=local_batch
    )

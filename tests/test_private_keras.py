"""The private Keras APIs tfrnn relies on are still there and still mean what tfrnn assumes:
a Keras upgrade that changes one fails here, by name, instead of deep inside a run."""

from __future__ import annotations

import inspect

import keras
import numpy as np


def test_the_cudnn_lstm_entry_point_takes_a_given_recurrent_kernel():
    """recurrent.LSTM (weight drop on a GPU) calls keras.src.backend.lstm with these names."""
    lstm = keras.src.backend.lstm
    names = set(inspect.signature(lstm).parameters)
    assert {"inputs", "initial_state_h", "initial_state_c", "mask", "kernel", "recurrent_kernel"} <= names
    assert {"bias", "activation", "recurrent_activation", "return_sequences", "go_backwards"} <= names


def test_the_multi_worker_reduction_tfrnn_wraps_is_there():
    """distribute.py replaces the TensorFlow trainer's reduce_per_replica (keras#20585)."""
    from keras.src.backend.tensorflow import trainer

    assert list(inspect.signature(trainer.reduce_per_replica).parameters)[:3] == [
        "values",
        "strategy",
        "reduction",
    ]
    assert callable(trainer._collective_all_reduce_multi_worker)
    assert callable(keras.Model._symbolic_build)


def test_an_optimizer_keeps_its_schedule_and_moving_average_where_tfrnn_reads_them():
    """train.BudgetClock reads optimizer._learning_rate (the schedule object);
    evaluate.StreamScorer reads optimizer._model_variables_moving_average (EMA)."""
    schedule = keras.optimizers.schedules.CosineDecay(0.1, 10)
    weights = [keras.Variable(np.ones((2,), "float32")), keras.Variable(np.zeros((3,), "float32"))]
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, use_ema=True, ema_momentum=0.5)
    optimizer.build(weights)
    assert optimizer._learning_rate is schedule
    average = optimizer._model_variables_moving_average
    assert [tuple(v.shape) for v in average] == [(2,), (3,)]  # in the variables' order
    optimizer.apply_gradients(zip([np.ones((2,), "float32"), np.ones((3,), "float32")], weights))
    assert not np.allclose(keras.ops.convert_to_numpy(average[0]), 1.0)  # it moves with the weights


def test_keras_tuner_saves_its_state_through_the_writer_tfrnn_replaces():
    """tuner.search.atomic_tuner_state replaces keras_tuner.src.utils.save_json; the tuner's,
    the oracle's and the trials' state must still be written through that module attribute."""
    from keras_tuner.src import utils
    from keras_tuner.src.engine import stateful

    assert list(inspect.signature(utils.save_json).parameters) == ["path", "obj"]
    assert "utils.save_json(" in inspect.getsource(stateful.Stateful.save)

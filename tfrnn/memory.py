"""Memory a run will need, checked before anything is allocated.

A model or a sequence length too large for the machine would otherwise fail deep inside
TensorFlow (or the kernel's OOM killer) after minutes; the estimate here is refused in
one line first. It counts the weights with their gradients and two optimizer slots, the
activations a training batch keeps for its backward pass, and the hw4 windows.
"""

from __future__ import annotations

from pathlib import Path

from tfrnn.config import GATES, TrainConfig
from tfrnn.data import VOCAB_SIZE
from tfrnn.errors import ConfigError

FLOAT = 4


def parameter_count(config: TrainConfig, vocab_size: int) -> int:
    """Keras' ``count_params`` of ``config``'s model, from the layer shapes alone."""
    g, h = GATES[config.cell], config.units
    count = vocab_size * config.embedding if config.embedding else 0
    d = config.embedding or vocab_size
    for _ in range(config.layers):
        biases = 2 * g * h if config.cell == "gru" else g * h  # GRU reset_after: two bias vectors
        count += g * h * (d + h) + biases
        d = h
    return count + h * vocab_size + vocab_size


def training_bytes(config: TrainConfig, vocab_size: int) -> int:
    """Rough peak memory of training ``config``: weights x 4 (gradients, two optimizer slots),
    the activations of one batch (gates, states and outputs of every step and layer, logits),
    and the hw4 windows."""
    from tfrnn.data import hw4_window_bytes

    tokens = config.batch_size * config.num_steps
    per_token = config.layers * config.units * (GATES[config.cell] + 3) + 3 * vocab_size
    per_token += config.embedding or vocab_size
    data = hw4_window_bytes(config.num_steps) if config.preset == "hw4" else 0
    return FLOAT * (4 * parameter_count(config, vocab_size) + tokens * per_token) + data


def available_bytes() -> int | None:
    """Memory the system can still give a process (``MemAvailable``), None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def check_fits(config: TrainConfig, vocab_size: int = VOCAB_SIZE) -> None:
    """Refuse, in one line, a run whose estimated memory exceeds what the machine has."""
    need, have = training_bytes(config, vocab_size), available_bytes()
    if have is not None and need > have:
        raise ConfigError(
            f"{config.name} would need about {need / 2**30:,.1f} GiB to train "
            f"({parameter_count(config, vocab_size):,} parameters, batches of "
            f"{config.batch_size} x {config.num_steps}), more than the {have / 2**30:,.1f} GiB "
            "available: use fewer --units/--layers, a smaller --batch-size or --num-steps"
        )

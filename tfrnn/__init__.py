"""tfrnn: character-level recurrent language models with TensorFlow/Keras."""

import os

__version__ = "0.1.0"


def use_bfc_allocator() -> None:
    """Ask TensorFlow for its BFC allocator on the CPU; call it before TensorFlow is imported.

    TensorFlow's default CPU allocator returns large buffers to the system and page-faults
    them back in every step; its BFC allocator keeps them. With XLA this is the difference
    between no gain and a third off GRU-32's epoch (tools/bench.py). The `tfrnn` command and
    the tools call it first thing; importing tfrnn changes nothing by itself. A setting the
    user made is kept.
    """
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

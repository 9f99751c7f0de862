"""tfrnn: character-level recurrent language models with TensorFlow/Keras."""

import os

__version__ = "0.1.0"

# TensorFlow's default CPU allocator returns large buffers to the system and page-faults
# them back in every step; its BFC allocator keeps them. With XLA this is the difference
# between no gain and a third off GRU-32's epoch (tools/bench.py). It must be set before
# TensorFlow starts, so importing tfrnn first is what turns it on.
os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")

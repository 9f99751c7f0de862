"""tfrnn: character-level recurrent language models with TensorFlow/Keras."""

__version__ = "0.1.0"

"""TensorFlow Datasets builders that ship with tfrnn (``tfds build tfrnn/datasets/NAME``)."""

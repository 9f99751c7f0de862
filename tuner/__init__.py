"""Keras Tuner hypermodels and search spaces for tfrnn (`tfrnn tune`)."""

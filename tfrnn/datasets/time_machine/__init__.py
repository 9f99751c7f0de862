"""The Time Machine as a TFDS dataset: ``time_machine_dataset_builder.Builder``."""

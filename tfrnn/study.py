"""The reference study's published figures (hw4_report.txt, PROTOCOL.md), for comparison.

These are the study's numbers, quoted, never tfrnn's results: reports set them beside what
tfrnn measured and say where the two differ.
"""

from __future__ import annotations

#: The study's three prompts, each continued by 20 greedy characters.
PROMPTS = ("it has", "we are always", "he looked across")

#: name -> train time on Colab (s), parameters and MACs (1,024 steps) as the study printed.
STUDY_MODELS: dict[str, dict] = {
    "gru-8": dict(seconds=89, params=912, macs=0.99e6),
    "gru-16": dict(seconds=91, params=2.21e3, macs=2.38e6),
    "gru-32": dict(seconds=104, params=5.95e3, macs=6.32e6),
    "gru-64": dict(seconds=163, params=18.05e3, macs=18.94e6),
    "gru-128": dict(seconds=333, params=60.67e3, macs=63.05e6),
    "lstm-8": dict(seconds=120, params=1.22e3, macs=1.33e6),
    "lstm-16": dict(seconds=123, params=2.94e3, macs=3.18e6),
    "lstm-32": dict(seconds=150, params=7.94e3, macs=8.45e6),
    "lstm-64": dict(seconds=234, params=24.06e3, macs=25.3e6),
    "lstm-128": dict(seconds=452, params=80.9e3, macs=84.15e6),
    "rnn-64": dict(seconds=131, params=6.02e3, macs=6.23e6),
    "gru-3x32": dict(seconds=194, params=18.62e3, macs=19.76e6),
    "lstm-3x32": dict(seconds=273, params=24.83e3, macs=26.41e6),
    "gru-5x32": dict(seconds=330, params=31.3e3, macs=33.19e6, val_ppl=16.7),
    "lstm-5x32": dict(seconds=397, params=41.73e3, macs=44.37e6, val_ppl=17.5),
}

#: How many of the study's four deep stacks wrote only blanks after its three prompts.
STUDY_BLANK_DEEP_STACKS = 3

#: The study's perplexity ranks (1 = lowest perplexity) in each of its tables.
STUDY_RANKS: dict[str, dict[str, int]] = {
    "GRU": {"gru-8": 5, "gru-16": 4, "gru-32": 3, "gru-64": 2, "gru-128": 1},
    "LSTM": {"lstm-8": 5, "lstm-16": 4, "lstm-32": 3, "lstm-64": 2, "lstm-128": 1},
    "64 units": {"rnn-64": 3, "gru-64": 1, "lstm-64": 2},
    "Deep stacks": {"gru-3x32": 1, "lstm-3x32": 3, "gru-5x32": 2, "lstm-5x32": 3},
}

#: The study's greedy continuations of its three prompts.
STUDY_CONTINUATIONS: dict[str, tuple[str, str, str]] = {
    "gru-8": ("the the the the", "the the the the", "the the the the"),
    "gru-16": ("mong the the the", "the the the the", "ing the the the"),
    "gru-32": ("the the the the", "ed the time the time", "the time the time t"),
    "gru-64": ("in thing that that", "dimension in i sume", "the psychologist yo"),
    "gru-128": ("it and the time tra", "the time traveller", "ed the provention is"),
    "lstm-8": ("the the the the", "and and and and", "and and and and"),
    "lstm-16": ("the the the the", "of the the the", "of the the the"),
    "lstm-32": ("the traveller and t", "of the time travell", "ions and the time tr"),
    "lstm-64": ("inour and wather an", "of and wathereard h", "have and the time t"),
    "lstm-128": ("in and in and the t", "er and the the grome", "of the thing the ti"),
    "rnn-64": ("and hin the proun t", "all has in the time", "his said the time t"),
}

#: The 14 models of the study, in its order (cell, units, layers).
HW4_GRID: tuple[tuple[str, int, int], ...] = (
    *(("gru", u, 1) for u in (8, 16, 32, 64, 128)),
    *(("lstm", u, 1) for u in (8, 16, 32, 64, 128)),
    ("rnn", 64, 1),
    ("gru", 32, 3),
    ("lstm", 32, 3),
    ("gru", 32, 5),
    ("lstm", 32, 5),
)

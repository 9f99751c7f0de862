"""Mutation checks: break one product line at a time and show that the test guarding it fails.

    python tools/mutation_check.py [--only N,M] [--workers 2]

Each check replaces one exact line fragment of tfrnn's source (it must occur once), runs the
named test the way the README's command does (pytest-xdist workers, so the shared, once per
suite runs of ``tests/conftest.py`` are built as the suite builds them), and puts the file
back, byte for byte, whatever happens (Ctrl-C included). A check passes when the test fails
(a test that is skipped or errors in its setup does not count as a catch). The tests named
here are ones whose setup issue 40 changed: they read a run trained once per suite, or the
kernel compiled and checked once per suite.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]


class Mutation(NamedTuple):
    path: str
    old: str
    new: str
    test: str


MUTATIONS = [
    Mutation(  # the ensemble's mean of probabilities becomes their minimum
        "tfrnn/scoring.py",
        "np.log(np.exp(stacked - top).mean(axis=0))",
        "np.log(np.exp(stacked - top).min(axis=0))",
        "tests/test_scoring.py::test_an_ensemble_is_no_worse_than_its_members_on_average",
    ),
    Mutation(  # dynamic evaluation leaves its adapted weights in the model
        "tfrnn/scoring.py",
        "self.trained):\n                v.assign(w0)",
        "self.trained):\n                pass",
        "tests/test_scoring.py::test_dynamic_evaluation_without_a_step_is_the_static_figure_and_restores_the_weights",
    ),
    Mutation(  # bits per character in nats
        "tfrnn/experiment.py",
        "round(math.log2(metrics[k]), 6)",
        "round(math.log(metrics[k]), 6)",
        "tests/test_vocab.py::test_a_chars_run_records_its_vocabulary_and_bits_per_character",
    ),
    Mutation(  # carried-state evaluation forgets its state at every chunk
        "tfrnn/evaluate.py",
        "            self._chunk_cross_entropy(x[:, t : t + self.chunk], y[:, t : t + self.chunk]).numpy()",
        "            (reset_states(self.model), self._chunk_cross_entropy(x[:, t : t + self.chunk], "
        "y[:, t : t + self.chunk]).numpy())[1]",
        "tests/test_wholetext.py::test_carried_evaluation_equals_a_one_stream_reference_loop",
    ),
    Mutation(  # --init-from silently starts from fresh weights
        "tfrnn/experiment.py",
        '    return keras.saving.load_model(Path(config.init_from) / "model.keras").get_weights()',
        "    return None",
        "tests/test_wholetext.py::test_init_from_starts_from_the_runs_weights",
    ),
    Mutation(  # a finished run is replaced without --overwrite
        "tfrnn/rundir.py",
        "        if self.final.exists() and not overwrite:",
        "        if False:",
        "tests/test_fit.py::test_existing_run_is_kept_unless_overwrite",
    ),
    Mutation(  # the SavedModel's greedy generation picks the least likely character
        "tfrnn/export.py",
        "nxt = tf.argmax(logits, axis=-1, output_type=tf.int32)",
        "nxt = tf.argmin(logits, axis=-1, output_type=tf.int32)",
        "tests/test_export.py::test_plain_tensorflow_process_generates_exactly_what_tfrnn_generates",
    ),
    Mutation(  # the LiteRT step hands back its states in the wrong order (LSTM: h and c)
        "tfrnn/export_lite.py",
        "zip(states, [s for layer in new for s in layer])",
        "zip(states, [s for layer in new for s in layer][::-1])",
        "tests/test_lite.py::test_the_lite_model_uses_built_in_ops_and_equals_keras",
    ),
    Mutation(  # the study's MAC count off by one
        "tfrnn/profile.py",
        "macs_1024_study=study_macs(*args),",
        "macs_1024_study=study_macs(*args) + 1,",
        "tests/test_profile.py::test_fit_stores_the_profile_and_speed",
    ),
    Mutation(  # a library changed after its self-check is trusted anyway
        "tfrnn/kernel.py",
        'state.get("sha256") != _sha256(path))',
        "False)",
        "tests/test_kernel_safety.py::test_a_library_changed_after_its_check_is_built_anew",
    ),
    Mutation(  # the compiled LSTM starts from a zero cell state, not the one it is given
        "tfrnn/kernels/recurrence.cc",
        "if (cell == kLstm) c = CMat(c0p + b0 * H, n, H);",
        "if (cell == kLstm) c.setZero();",
        "tests/test_kernel.py::test_compiled_recurrence_equals_keras_outputs_states_and_gradients",
    ),
    Mutation(  # the whole-book run reports its validation figure as its test figure
        "tfrnn/experiment.py",
        '"test_perplexity": scorer.perplexity(splits.streams["test"]),',
        '"test_perplexity": scorer.perplexity(splits.streams["val"]),',
        "tests/test_wholetext.py::test_book_run_reports_one_sequence_figures_of_its_best_epoch",
    ),
]


def run_check(m: Mutation, workers: int) -> tuple[str, float, str]:
    """Apply ``m``, run its test, restore the file: (verdict, seconds, pytest's summary)."""
    path = ROOT / m.path
    original = path.read_bytes()
    text = original.decode()
    if text.count(m.old) != 1:
        return "NOT APPLIED (the line is not in the source once)", 0.0, ""
    start = time.monotonic()
    try:
        path.write_text(text.replace(m.old, m.new))
        cmd = [sys.executable, "-m", "pytest", m.test, "-n", str(workers), "-p", "no:cacheprovider"]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    finally:
        path.write_bytes(original)
    seconds = time.monotonic() - start
    lines = [line for line in done.stdout.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    summary = lines[-1].strip("= ") if lines else (done.stdout.strip().splitlines() or ["no output"])[-1]
    failed = done.returncode == 1 and re.search(r"\b[1-9]\d* failed\b", summary) and "error" not in summary
    return ("CAUGHT" if failed else "MISSED"), seconds, summary


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # so that the mutated file is put back (the ``finally`` above)


def main() -> int:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even where started ignoring it
    signal.signal(signal.SIGTERM, _interrupt)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated check numbers (1-based)")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers per check")
    args = parser.parse_args()
    chosen = {int(n) for n in args.only.split(",") if n} or set(range(1, len(MUTATIONS) + 1))
    missed = 0
    for number, m in enumerate(MUTATIONS, 1):
        if number not in chosen:
            continue
        verdict, seconds, summary = run_check(m, args.workers)
        missed += verdict != "CAUGHT"
        print(f"{number:2d}. {m.path}: {m.old.strip()!r} -> {m.new.strip()!r}", flush=True)
        print(f"    {m.test}: {verdict} ({summary}; {seconds:.0f} s)", flush=True)
    print(f"{len(chosen) - missed} of {len(chosen)} mutations caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())

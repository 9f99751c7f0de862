"""Generation throughput of an exported SavedModel: characters per second.

    python tools/bench_generate.py saved_models/gru-32 [--chars 1000] [--batch 1] [--repeats 5]

Loads only the SavedModel (plain TensorFlow), warms it up once, then times greedy
generation of --chars characters per prompt, batch --batch, and prints the median of
--repeats runs as one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os

from tfrnn.measure import median_seconds

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="run folder or SavedModel folder")
    ap.add_argument("--chars", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--temperature", type=float, default=0.0)
    a = ap.parse_args()

    import tensorflow as tf

    from tfrnn.serving import resolve_saved_model

    m = tf.saved_model.load(str(resolve_saved_model(a.model)))
    prompts = tf.constant(["the time traveller"] * a.batch)
    seeds = iter([0, *range(a.repeats)])  # the warm-up call (it builds the graph), then one per run
    med = median_seconds(
        lambda: m.generate(prompts, a.chars, a.temperature, next(seeds))["text"].numpy(), a.repeats
    )
    print(
        json.dumps(
            {
                "model": a.model,
                "chars": a.chars,
                "batch": a.batch,
                "temperature": a.temperature,
                "median_s": round(med, 4),
                "chars_per_s": round(a.chars * a.batch / med, 1),
                "ms_per_char": round(1000 * med / a.chars, 4),
            }
        )
    )


if __name__ == "__main__":
    main()

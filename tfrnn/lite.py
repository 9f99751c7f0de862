"""Generate and score with a LiteRT model, without TensorFlow: ``ai-edge-litert`` and numpy.

    python -m tfrnn.lite generate RUN/model.tflite --prompt "it has" [--chars 200]
        [--temperature 0.8] [--top-k 5] [--seed 0]
    python -m tfrnn.lite score RUN/model.tflite --text-file some.txt

or from code::

    from tfrnn.lite import LiteModel
    model = LiteModel("saved_models/gru-32/model.tflite")
    model.generate(["it has"], 200)          # greedy; temperature=, top_k=, seed=
    model.score(["some text"])               # cross-entropy, perplexity, characters

The host loop runs the model's ``step`` signature (``tfrnn.export_lite``) one character at a
time, the recurrent state carried, all prompts of a call as one batch: the prompt read
first, then each character chosen from the logits (arg-max at temperature 0, as the
study's greedy continuations; else sampled, optionally among the ``top_k`` likeliest),
``<unk>`` never written. This module imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from tfrnn.errors import TfrnnError
from tfrnn.vocab import CHARS, Vocab

MAX_CHARS = 100_000


class LiteModel:
    """A ``model.tflite`` with its ``model.json`` (vocabulary, states) beside it."""

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        from ai_edge_litert.interpreter import Interpreter

        path = Path(path)
        if path.is_dir():
            path = path / "model.tflite"
        meta_path = path.with_name("model.json")
        if not path.is_file() or not meta_path.is_file():
            raise TfrnnError(f"{path} and model.json beside it are needed (tfrnn export RUN --format litert)")
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        self.vocab = Vocab(tuple(meta["vocab"]["tokens"]), meta["vocab"].get("kind", "letters"))
        self.states = [(s["name"], s["size"]) for s in meta["states"]]
        self.facts = meta.get("facts", {})
        try:
            self._interpreter = Interpreter(model_path=str(path), num_threads=threads)
            self._step = self._interpreter.get_signature_runner(meta.get("signature", "step"))
        except (ValueError, RuntimeError) as exc:
            raise TfrnnError(f"{path} cannot be loaded by LiteRT ({exc})") from None
        self._shown = np.array(self.vocab.shown_tokens, dtype=object)

    def _zero(self, batch: int) -> dict[str, np.ndarray]:
        return {name: np.zeros((batch, size), np.float32) for name, size in self.states}

    def _run(self, ids: np.ndarray, states: dict) -> tuple[np.ndarray, dict]:
        out = self._step(ids=ids.astype(np.int32), **states)
        return out["logits"], {name: out[f"{name}_out"] for name, _ in self.states}

    def encode(self, text: str) -> tuple[str, np.ndarray]:
        """The text as the model reads it (letters: cleaned) and its ids."""
        ids = self.vocab.encode(text)
        read = text if self.vocab.kind == CHARS else self.vocab.decode(ids)
        return read, ids

    def _warm(self, prompts: list[str]) -> tuple[list[str], np.ndarray, dict]:
        """Read every prompt from a zero state (an empty one: from a space); returns the
        prompts as read, the last logits of each and the states."""
        encoded = [self.encode(p) for p in prompts]
        start = self.vocab.start_token
        reads = [r if len(ids) else self.vocab.tokens[start] for r, ids in encoded]
        rows = [ids if len(ids) else np.array([start], np.int32) for _, ids in encoded]
        lengths = np.array([len(r) for r in rows])
        batch = len(rows)
        states = self._zero(batch)
        logits = np.zeros((batch, len(self.vocab)), np.float32)
        for t in range(int(lengths.max())):
            ids = np.array([r[t] if t < len(r) else start for r in rows], np.int32)
            new_logits, new_states = self._run(ids, states)
            live = (t < lengths)[:, None]
            logits = np.where(live, new_logits, logits)
            states = {k: np.where(live, new_states[k], v) for k, v in states.items()}
        return reads, logits, states

    def generate(
        self,
        prompts: list[str] | str,
        num_chars: int = 20,
        temperature: float = 0.0,
        seed: int = 0,
        top_k: int = 0,
        continuation_only: bool = False,
    ) -> list[str]:
        """Each prompt plus ``num_chars`` characters (greedy at temperature 0)."""
        if isinstance(prompts, str):
            prompts = [prompts]
        if not (0 <= num_chars <= MAX_CHARS) or temperature < 0 or top_k < 0:
            raise TfrnnError(f"num_chars must be in 0..{MAX_CHARS:,}, temperature and top_k >= 0")
        reads, logits, states = self._warm(list(prompts))
        rng = np.random.default_rng(seed)
        chosen = np.zeros((len(reads), num_chars), np.int64)
        for i in range(num_chars):
            logits = logits.astype(np.float64)
            logits[:, self.vocab.unk] = -np.inf  # <unk> is no character to write
            if temperature > 0:
                scaled = logits / temperature
                if top_k:
                    kth = np.sort(scaled, axis=-1)[:, -min(top_k, scaled.shape[1])][:, None]
                    scaled = np.where(scaled < kth, -np.inf, scaled)
                p = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
                p /= p.sum(axis=-1, keepdims=True)
                nxt = np.array([rng.choice(len(row), p=row) for row in p])
            else:
                nxt = logits.argmax(axis=-1)
            chosen[:, i] = nxt
            logits, states = self._run(nxt, states)
        texts = ["".join(self._shown[row]) for row in chosen]
        return texts if continuation_only else [r + t for r, t in zip(reads, texts)]

    def score(self, texts: list[str] | str) -> dict:
        """Mean cross-entropy (nats per predicted character), perplexity and characters
        predicted over all ``texts``, each read from a zero state."""
        if isinstance(texts, str):
            texts = [texts]
        total, count = 0.0, 0
        for text in texts:
            ids = self.encode(text)[1]
            states = self._zero(1)
            for t in range(len(ids) - 1):
                logits, states = self._run(ids[t : t + 1], states)
                z = logits[0].astype(np.float64)
                total += float(np.log(np.exp(z - z.max()).sum()) + z.max() - z[ids[t + 1]])
                count += 1
        if not count:
            raise TfrnnError("nothing to score: the text has fewer than 2 characters")
        ce = total / count
        return {
            "characters": count,
            "cross_entropy": ce,
            "perplexity": math.exp(ce),
            "bits_per_character": ce / math.log(2),
        }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m tfrnn.lite", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="continue prompts")
    gen.add_argument("model", help="model.tflite (or the folder holding it)")
    gen.add_argument("--prompt", action="append", default=None, help="a prompt (repeat for several)")
    gen.add_argument("--chars", type=int, default=20)
    gen.add_argument("--temperature", type=float, default=0.0)
    gen.add_argument("--top-k", type=int, default=0)
    gen.add_argument("--seed", type=int, default=0)
    sc = sub.add_parser("score", help="perplexity of a text file")
    sc.add_argument("model")
    sc.add_argument("--text-file", required=True)
    a = ap.parse_args(argv)
    try:
        model = LiteModel(a.model)
        if a.command == "generate":
            for text in model.generate(a.prompt or [""], a.chars, a.temperature, a.seed, a.top_k):
                print(text)
        else:
            text = Path(a.text_file).read_text(encoding="utf-8-sig")
            r = model.score([text])
            print(
                f"{r['characters']:,} characters: cross-entropy {r['cross_entropy']:.4f} nats, perplexity "
                f"{r['perplexity']:.3f}, {r['bits_per_character']:.4f} bits per character"
            )
    except (TfrnnError, OSError, UnicodeDecodeError) as exc:
        print(f"tfrnn: error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

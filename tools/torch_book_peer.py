"""The PyTorch peer of tfrnn's book preset, for tools/bench_book.py (needs only torch and numpy).

Adapted from ../shared/bench/torch_book_reference.py, with the same protocol: the text
read with tfrnn's vocabulary rules (``--vocab letters``: cleaned as the study does;
``chars``: every character as it is, the vocabulary built from the training part, characters
seen fewer than ``--min-count`` times there, and ones never seen, read as <unk>), split
90/5/5, embedding 64, dropout on the embedding and the
recurrent outputs (and between layers), independent windows of 100 characters from a
random offset each epoch, batches of 64, Adam 3e-3, gradient norm clipped at 1, and
validation and test parts each read as one sequence, the state carried. Added: a
wall-clock budget (stop after the epoch that crosses it), per-epoch seconds, and one line
of JSON at the end, and ``--epoch-chars`` (tfrnn fit's: an epoch of that many training
characters, the shuffled passes read on from epoch to epoch), so that on a large text the
budget is checked, and the model validated, more often than once a pass.

    python tools/torch_book_peer.py --cell lstm --units 512 --layers 2 --dropout 0.5 \\
        --budget-min 15 --data timemachine.txt
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import statistics
import time

import numpy as np
import torch
from torch import nn


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cell", choices=("rnn", "gru", "lstm"), default="lstm")
    ap.add_argument("--units", type=int, default=256)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.3)
    ap.add_argument("--epochs", type=int, default=1000, help="at most this many epochs")
    ap.add_argument("--budget-min", type=float, default=None, help="stop after the epoch that crosses it")
    ap.add_argument("--data", required=True, help="the text file")
    ap.add_argument("--epoch-chars", type=int, default=None, help="an epoch of this many training characters")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab", choices=("letters", "chars"), default="chars")
    ap.add_argument("--min-count", type=int, default=2)
    ap.add_argument("--max-vocab", type=int, default=1024)
    a = ap.parse_args()

    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    with open(a.data, encoding="utf-8-sig") as f:
        text = f.read()
    if a.vocab == "letters":
        text = re.sub("[^A-Za-z]+", " ", text).lower()
        vocab = sorted(set(["<unk>", *set(text)]))
        index = {c: i for i, c in enumerate(vocab)}
        ids = np.array([index[ch] for ch in text], dtype=np.int64)
    else:  # tfrnn.vocab's chars rule: <unk> = 0, then the kept characters by code point
        codes = np.frombuffer(text.encode("utf-32-le"), "<u4")
        values, counts = np.unique(codes[: int(0.9 * len(codes))], return_counts=True)
        values, counts = values[counts >= a.min_count], counts[counts >= a.min_count]
        if len(values) > a.max_vocab - 1:
            values = np.sort(values[np.lexsort((values, -counts))[: a.max_vocab - 1]])
        vocab = ["<unk>", *map(chr, values)]
        idx = np.minimum(np.searchsorted(values, codes), len(values) - 1)
        ids = np.where(values[idx] == codes, idx + 1, 0).astype(np.int64)
    size = len(vocab)
    n = len(ids)
    train, val, test = ids[: int(0.9 * n)], ids[int(0.9 * n) : int(0.95 * n)], ids[int(0.95 * n) :]
    steps, batch = 100, 64
    rnn_class = {"gru": nn.GRU, "lstm": nn.LSTM, "rnn": nn.RNN}[a.cell]

    class LM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(size, 64)
            drop = a.dropout if a.layers > 1 else 0
            self.rnn = rnn_class(64, a.units, a.layers, dropout=drop, batch_first=True)
            self.drop = nn.Dropout(a.dropout)
            self.out = nn.Linear(a.units, size)

        def forward(self, x, h=None):
            o, h = self.rnn(self.drop(self.emb(x)), h)
            return self.out(self.drop(o)), h

    model = LM()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    loss_fn = nn.CrossEntropyLoss()

    def evaluate(seq) -> float:
        model.eval()
        h, total, count = None, 0.0, 0
        with torch.no_grad():
            x, y = torch.tensor(seq[:-1])[None], torch.tensor(seq[1:])[None]
            for i in range(0, x.shape[1], 1000):
                o, h = model(x[:, i : i + 1000], h)
                total += loss_fn(o.reshape(-1, size), y[:, i : i + 1000].reshape(-1)).item() * o.shape[1]
                count += o.shape[1]
        return math.exp(total / count)

    budget = 60 * a.budget_min if a.budget_min else math.inf
    best, best_epoch, best_test, seconds = math.inf, 0, math.nan, []

    def one_pass():
        """The window starts of one pass, in batches: a random offset, shuffled."""
        offset = np.random.randint(steps)
        starts = np.arange(offset, len(train) - steps - 1, steps)
        np.random.shuffle(starts)
        for i in range(0, len(starts), batch):
            yield starts[i : i + batch]

    def passes():
        """One pass after another, without end (the batches of --epoch-chars epochs)."""
        while True:
            yield from one_pass()

    stream = passes()
    # tfrnn.data.epoch_steps' rule (this script imports only torch and numpy)
    per_pass = math.ceil((len(train) - steps - 1) / steps / batch)
    epoch_batches = max(1, min(per_pass, a.epoch_chars // (batch * steps))) if a.epoch_chars else None
    for epoch in range(a.epochs):
        t0 = time.perf_counter()
        model.train()
        for s in itertools.islice(stream, epoch_batches) if epoch_batches else one_pass():
            x = torch.tensor(np.stack([train[j : j + steps] for j in s]))
            y = torch.tensor(np.stack([train[j + 1 : j + steps + 1] for j in s]))
            o, _ = model(x)
            loss = loss_fn(o.reshape(-1, size), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        v = evaluate(val)
        seconds.append(time.perf_counter() - t0)  # training and validation, as tfrnn counts
        if v < best:
            best, best_epoch = v, epoch + 1
            best_test = evaluate(test)
        print(f"epoch {epoch + 1} val {v:.3f} {seconds[-1]:.1f}s", flush=True)
        if sum(seconds) >= budget:
            break
    print(
        json.dumps(
            {
                "best_val_ppl": best,
                "best_epoch": best_epoch,
                "test_ppl": best_test,
                "test_bpc": math.log2(best_test),
                "vocab": a.vocab,
                "vocab_size": size,
                "epochs": len(seconds),
                "training_s": sum(seconds),
                "median_epoch_s": statistics.median(seconds[1:] or seconds),
                "params": sum(p.numel() for p in model.parameters()),
                "threads": torch.get_num_threads(),
            }
        )
    )


if __name__ == "__main__":
    main()

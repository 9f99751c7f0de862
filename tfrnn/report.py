"""The comparison report: results.csv / results.json, figures, and report.md that links them."""

from __future__ import annotations

import csv
import json
import math
import platform
from datetime import UTC, datetime
from pathlib import Path

from tfrnn.data import VOCAB_SIZE
from tfrnn.plots import CELL_COLOURS, figure
from tfrnn.rundir import read_history
from tfrnn.study import (
    PROMPTS,
    STUDY_BLANK_DEEP_STACKS,
    STUDY_CONTINUATIONS,
    STUDY_MODELS,
    STUDY_RANKS,
)


def result_rows(results: list[dict]) -> list[dict]:
    """One flat row per model (for CSV, JSON and the report)."""
    from tfrnn.profile import study_macs

    rows = []
    for m in results:
        c = m["config"]
        row = {
            "model": m["name"],
            "cell": c["cell"],
            "units": c["units"],
            "layers": c["layers"],
            "dropout": c["dropout"],
            "preset": c["preset"],
            "epochs": c["epochs"],
            "vocab": c.get("vocab", "letters"),
            "status": "failed" if "failed" in m else "ok",
            "error": m.get("failed", ""),
        }
        study = STUDY_MODELS.get(m["name"], {}) if c["preset"] == "hw4" and row["vocab"] == "letters" else {}
        size = m.get("vocabulary", {}).get("size", VOCAB_SIZE)
        row["vocab_size"] = size
        row["macs_1024_study"] = study_macs(c["cell"], c["units"], c["layers"], c["embedding"] or size)
        if "failed" not in m:
            p = m["parameters"]
            row.update(
                val_ppl=m["final_val_perplexity"],
                val_bpc=math.log2(m["final_val_perplexity"]),
                best_val_ppl=m["best_val_perplexity"],
                best_epoch=m["best_epoch"],
                train_ppl=m["final_train_perplexity"],
                test_ppl=m["test_perplexity"],
                training_seconds=m["training_seconds"],
                seconds_per_epoch=m["median_epoch_seconds"],
                params_total=p["total"],
                params_recurrent_keras=p["recurrent_keras"],
                params_recurrent_study=p["recurrent_study"],
            )
            for prompt in PROMPTS:
                row[f"continuation: {prompt}"] = m["continuations"][prompt]
        row["study_seconds"] = study.get("seconds")
        row["study_params"] = study.get("params")
        row["study_macs"] = study.get("macs")
        study_text = STUDY_CONTINUATIONS.get(m["name"]) if study else None
        for prompt, text in zip(PROMPTS, study_text or (None,) * 3):
            row[f"study continuation: {prompt}"] = text
        rows.append(row)
    return rows


def families(rows: list[dict]) -> dict[str, list[dict]]:
    """The report's tables: one per single-layer cell, one per shared width, deep stacks."""
    single = [r for r in rows if r["layers"] == 1]
    tables: dict[str, list[dict]] = {}
    for cell in ("gru", "lstm", "rnn"):
        members = sorted((r for r in single if r["cell"] == cell), key=lambda r: r["units"])
        if members:
            tables[{"gru": "GRU", "lstm": "LSTM", "rnn": "SimpleRNN"}[cell]] = members
    for units in sorted({r["units"] for r in single}):
        members = [r for r in single if r["units"] == units]
        if len({r["cell"] for r in members}) > 1:
            tables[f"{units} units"] = sorted(members, key=lambda r: ("rnn", "gru", "lstm").index(r["cell"]))
    deep = [r for r in rows if r["layers"] > 1]
    if deep:
        tables["Deep stacks"] = sorted(deep, key=lambda r: (r["layers"], r["cell"], r["units"]))
    return tables


def ranks(members: list[dict]) -> dict[str, int]:
    """Rank by final validation perplexity, 1 = lowest; failed models are not ranked."""
    ok = sorted((r for r in members if r["status"] == "ok"), key=lambda r: r["val_ppl"])
    return {r["model"]: i for i, r in enumerate(ok, 1)}


def _slug(title: str) -> str:
    return title.lower().replace(" ", "_")


def plot_family(title: str, members: list[dict], runs: Path, path: Path) -> None:
    """Validation perplexity against epoch for every model of one table, on one axis."""
    with figure(
        path,
        f"{title}: validation perplexity",
        "epoch",
        "validation perplexity (log scale)",
        ylog=True,
        legend_size=8,
    ) as ax:
        for r in members:
            history_file = runs / r["model"] / "history.csv"
            if r["status"] == "ok" and history_file.is_file():
                h = read_history(history_file, one_based=True)
                ax.plot([e["epoch"] for e in h], [e["val_perplexity"] for e in h], label=r["model"])


def plot_ppl_vs_params(rows: list[dict], path: Path) -> None:
    """Final validation perplexity against parameters (log scale), every model."""
    with figure(
        path,
        "Perplexity against size",
        "parameters of the recurrent layers (study convention, log scale)",
        "final validation perplexity",
        xlog=True,
        legend_size=8,
    ) as ax:
        for cell, colour in CELL_COLOURS.items():
            pts = [r for r in rows if r["status"] == "ok" and r["cell"] == cell]
            for deep in (False, True):
                sel = [r for r in pts if (r["layers"] > 1) == deep]
                if sel:
                    ax.scatter(
                        [r["params_recurrent_study"] for r in sel],
                        [r["val_ppl"] for r in sel],
                        color=colour,
                        marker="s" if deep else "o",
                        label=f"{cell}{' stacks' if deep else ''}",
                    )
            for r in pts:
                ax.annotate(
                    r["model"],
                    (r["params_recurrent_study"], r["val_ppl"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )


def plot_time_vs_units(rows: list[dict], path: Path) -> None:
    """Training time against units, one line per single-layer cell."""
    with figure(
        path, "Training time against width", "units (log scale)", "training time (s)", xlog=2, legend_size=8
    ) as ax:
        for cell, colour in CELL_COLOURS.items():
            sel = sorted(
                (r for r in rows if r["status"] == "ok" and r["cell"] == cell and r["layers"] == 1),
                key=lambda r: r["units"],
            )
            if sel:
                ax.plot(
                    [r["units"] for r in sel],
                    [r["training_seconds"] for r in sel],
                    marker="o",
                    color=colour,
                    label=cell,
                )


def _num(x, fmt: str = ",.2f") -> str:
    return "–" if x is None else format(x, fmt)


def study_ranks(title: str, members: list[dict]) -> dict[str, int]:
    """The study's ranks for a table, when it holds exactly the study's models."""
    study = STUDY_RANKS.get(title, {})
    return study if set(study) == {r["model"] for r in members} else {}


def _why_not_monotone(title: str, by_units: list[dict]) -> list[str]:
    """Explain a family whose validation perplexity does not fall with width: overfitting?"""
    out = []
    train = [r["train_ppl"] for r in by_units]
    if all(b < a for a, b in zip(train, train[1:])):
        out.append(
            f"{title}: by training perplexity the order is the study's "
            f"({' > '.join(f'{t:.2f}' for t in train)}, {by_units[0]['model']} to "
            f"{by_units[-1]['model']}): the wider models fit the training text better."
        )
    overfit = [
        r
        for r in by_units
        if r["best_epoch"] <= 0.85 * r["epochs"] and r["val_ppl"] > 1.03 * r["best_val_ppl"]
    ]
    if overfit:
        out.append(
            f"{title}: why the validation order differs: "
            + "; ".join(
                f"{r['model']} overfits (validation perplexity was lowest, {r['best_val_ppl']:.2f}, "
                f"at epoch {r['best_epoch']} and rose to {r['val_ppl']:.2f} while training "
                f"perplexity fell to {r['train_ppl']:.2f})"
                for r in overfit
            )
            + ". The hw4 split trains on the book's first ~10,000 characters only: little text for "
            "the wider models over a fixed number of epochs."
        )
    swings = [
        r
        for r in by_units
        if r["best_epoch"] > 0.85 * r["epochs"] and r["val_ppl"] > 1.03 * r["best_val_ppl"]
    ]
    if swings:
        out.append(
            f"{title}: "
            + "; ".join(
                f"{r['model']} ends {100 * (r['val_ppl'] / r['best_val_ppl'] - 1):.0f}% above its best "
                f"validation perplexity ({r['best_val_ppl']:.2f} at epoch {r['best_epoch']})"
                for r in swings
            )
            + ": the validation curve still swings from epoch to epoch at this learning rate."
        )
    return out


def findings(tables: dict[str, list[dict]], rows: list[dict], unigram: float) -> list[str]:
    """Sentences comparing this run with the study, generated from the numbers."""
    out = []
    for title, members in tables.items():
        ours = ranks(members)
        if title in ("GRU", "LSTM", "SimpleRNN") and len(ours) > 1:
            by_units = [r for r in sorted(members, key=lambda r: r["units"]) if r["status"] == "ok"]
            not_lower = [(a, b) for a, b in zip(by_units, by_units[1:]) if b["val_ppl"] >= a["val_ppl"]]
            if not not_lower:
                out.append(
                    f"{title}: more units gave lower validation perplexity at every step "
                    f"({', '.join(r['model'] for r in by_units)}), as the study found."
                )
            else:
                out.append(
                    f"{title}: unlike the study, perplexity does not fall with every increase in "
                    "units: "
                    + "; ".join(
                        f"{b['model']} ({b['val_ppl']:.2f}) is not below {a['model']} ({a['val_ppl']:.2f})"
                        for a, b in not_lower
                    )
                    + "."
                )
                out += _why_not_monotone(title, by_units)
        study = study_ranks(title, members)
        common = [m for m in ours if m in study]
        if len(common) > 1 and title not in ("GRU", "LSTM"):
            differ = [
                f"{m} is ranked {ours[m]} here, {study[m]} in the study"
                for m in common
                if sorted(common, key=ours.get).index(m) != sorted(common, key=study.get).index(m)
            ]
            if differ:
                out.append(f"{title}: the order differs from the study's: {'; '.join(differ)}.")
            else:
                out.append(f"{title}: same order as the study ({', '.join(sorted(common, key=ours.get))}).")
    ok = [r for r in rows if r["status"] == "ok"]
    stalled = [r for r in ok if r["val_ppl"] >= 0.95 * unigram]
    deep = [r for r in ok if r["layers"] > 1]
    if deep:
        if stalled:
            out.append(
                f"Stalled near the unigram level (validation perplexity {unigram:.2f} from letter "
                f"counts alone): {', '.join(r['model'] for r in stalled)}."
            )
        study_stalled = {name: m["val_ppl"] for name, m in STUDY_MODELS.items() if "val_ppl" in m}
        for r in deep:
            if r["model"] in study_stalled and r not in stalled:
                out.append(
                    f"The study's {r['model']} stalled near the unigram level "
                    f"({study_stalled[r['model']]}); here it reached {r['val_ppl']:.2f} "
                    f"(unigram level {unigram:.2f})."
                )
        blanks = [r["model"] for r in deep if all(not r[f"continuation: {p}"].strip() for p in PROMPTS)]
        out.append(
            f"{len(blanks)} of {len(deep)} deep stacks wrote only blanks after the three prompts"
            f"{' (' + ', '.join(blanks) + ')' if blanks else ''}; "
            f"in the study {STUDY_BLANK_DEEP_STACKS} of 4 did."
        )
    differ = [r for r in ok if r["params_recurrent_study"] != r["params_recurrent_keras"]]
    if differ:
        r = differ[0]
        out.append(
            "Parameters are counted as the study counted them (recurrent layers only, PyTorch's "
            "two bias vectors per layer); Keras stores one bias vector in LSTM and SimpleRNN "
            f"layers, so it holds fewer (e.g. {r['model']}: {r['params_recurrent_keras']:,} in "
            f"Keras, {r['params_recurrent_study']:,} in the study's convention)."
        )
    timed = [r for r in ok if r.get("study_seconds") and r["epochs"] == 50]
    if timed:
        ratio = sum(r["training_seconds"] for r in timed) / sum(r["study_seconds"] for r in timed)
        out.append(
            f"Training took {ratio:.2f}x the study's Colab time over the {len(timed)} models both "
            f"trained (this machine: {platform.machine()}, {_cores()} cores; different hardware)."
        )
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        out.append(
            f"{len(failed)} model(s) failed and are listed at the end: "
            f"{', '.join(r['model'] for r in failed)}."
        )
    return out


def _cores() -> int:
    import os

    return os.cpu_count() or 1


def write_report(out: Path, grid_name: str, rows: list[dict], unigram: float, wall_seconds: float) -> Path:
    """Write results.csv, results.json, the figures and report.md into ``out``."""
    runs = out / "runs"
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(out / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    tables = families(rows)
    figures = {}
    for title, members in tables.items():
        figures[title] = f"val_ppl_{_slug(title)}.png"
        plot_family(title, members, runs, out / figures[title])
    if any(r["status"] == "ok" for r in rows):
        plot_ppl_vs_params(rows, out / "ppl_vs_params.png")
        plot_time_vs_units(rows, out / "time_vs_units.png")

    first = rows[0]
    md = [f"# tfrnn compare: {grid_name}", ""]
    trained = sum(r.get("training_seconds") or 0 for r in rows)
    md.append(
        f"{len(rows)} models, preset `{first['preset']}`, {first['epochs']} epochs; training time "
        f"{trained / 60:.1f} min in all (this invocation's wall time {wall_seconds / 60:.1f} min: "
        f"models finished earlier are kept); written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC "
        f"on {platform.machine()} with {_cores()} cores. Vocabulary: {first.get('vocab', 'letters')} "
        f"({first.get('vocab_size', VOCAB_SIZE)} tokens; perplexities compare only within one "
        "vocabulary, bits per character across them). Perplexity is the final validation "
        "perplexity (lower is better); rank 1 is the lowest in its table. Parameters and MACs "
        "(one 1,024-step sequence) follow the study's convention: recurrent layers only."
    )
    md += ["", "## Findings", ""] + [f"- {s}" for s in findings(tables, rows, unigram)]
    for title, members in tables.items():
        ours, study = ranks(members), study_ranks(title, members)
        md += [
            "",
            f"## {title}",
            "",
            "| model | perplexity | bits/char | best (epoch) | train ppl | rank | study rank | train time "
            "| study time (50 epochs) | parameters | MACs |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in members:
            if r["status"] != "ok":
                md.append(f"| {r['model']} | failed | | | | | {study.get(r['model'], '–')} | | | | |")
                continue
            md.append(
                f"| {r['model']} | {r['val_ppl']:.2f} | {r['val_bpc']:.3f} "
                f"| {r['best_val_ppl']:.2f} ({r['best_epoch']}) "
                f"| {r['train_ppl']:.2f} | {ours[r['model']]} | {study.get(r['model'], '–')} "
                f"| {r['training_seconds']:.0f} s "
                f"| {_num(r['study_seconds'], '.0f')}{' s' if r['study_seconds'] else ''} "
                f"| {r['params_recurrent_study']:,} | {r['macs_1024_study'] / 1e6:.2f}M |"
            )
        md += ["", f"![{title}: validation perplexity against epoch]({figures[title]})"]
    md += [
        "",
        "## Continuations (greedy, 20 characters)",
        "",
        "| model | " + " | ".join(f"'{p}'" for p in PROMPTS) + " |",
        "|---|---|---|---|",
    ]
    for r in rows:
        if r["status"] == "ok":
            md.append(
                f"| {r['model']} | " + " | ".join(f"`{r[f'continuation: {p}']}`" for p in PROMPTS) + " |"
            )
        if r.get(f"study continuation: {PROMPTS[0]}"):
            md.append(
                "| *study* | " + " | ".join(f"`{r[f'study continuation: {p}']}`" for p in PROMPTS) + " |"
            )
    if any(r["status"] == "ok" for r in rows):
        md += [
            "",
            "## Size and time",
            "",
            "![Final validation perplexity against parameters](ppl_vs_params.png)",
            "",
            "![Training time against units](time_vs_units.png)",
        ]
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        md += ["", "## Failed models", ""] + [f"- {r['model']}: {r['error']}" for r in failed]
    md += [
        "",
        "Every model's own folder (model, SavedModel, history, curves) is under `runs/`; "
        "`results.csv` and `results.json` hold these numbers for pandas.",
    ]
    path = out / "report.md"
    path.write_text("\n".join(md) + "\n")
    return path

"""`tfrnn` commands that use trained models: export, generate, score, serve; the compiled
kernel's build and status; info for a bug report."""

from __future__ import annotations

import math
import os
from pathlib import Path

import click

from tfrnn import serving
from tfrnn.cli_common import (
    COUNT,
    LONG_GENERATION,
    LONG_TEXT,
    SEED,
    WINDOW,
    cli,
    import_tensorflow_quietly,
    ranged,
)
from tfrnn.errors import TfrnnError


@cli.command()
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["savedmodel", "litert"]),
    default="savedmodel",
    show_default=True,
    help="savedmodel: RUN_DIR/saved_model (TensorFlow). litert: RUN_DIR/model.tflite and "
    "model.json, one step with built-in ops only, for phones, boards and `python -m "
    "tfrnn.lite` (ai-edge-litert and numpy, no TensorFlow).",
)
def export(run_dir: Path, fmt: str) -> None:
    """Export RUN_DIR (a folder written by `tfrnn fit`) as a SavedModel or a LiteRT model.

    `tfrnn fit` already exports RUN_DIR/saved_model; use this after upgrading tfrnn, to
    rebuild a deleted export, or for a LiteRT file (written on request only).

    \b
    Examples:
      tfrnn export saved_models/gru-32 --format litert
      python -m tfrnn.lite generate saved_models/gru-32/model.tflite --prompt "it has"
    """
    import_tensorflow_quietly()
    from tfrnn.export import export_run

    click.echo(f"exported {export_run(run_dir, fmt)}")


@cli.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--prompt",
    "prompts",
    multiple=True,
    default=("it has",),
    show_default=True,
    help="Text to continue (repeat for several; cleaned like the training text; "
    "an empty prompt starts from a space).",
)
@click.option(
    "--chars",
    type=ranged(serving.CHARS),
    default=20,
    show_default=True,
    help="Characters to generate after each prompt (at most 100,000).",
)
@click.option(
    "--temperature",
    type=ranged(serving.TEMPERATURE),
    default=0.0,
    show_default=True,
    help="0 picks the likeliest character (greedy, as in the study); higher samples more freely.",
)
@click.option(
    "--top-k",
    type=ranged(serving.TOP_K),
    default=0,
    show_default=True,
    help="Sample only among the K likeliest characters (0: all).",
)
@click.option(
    "--seed",
    type=SEED,
    default=0,
    show_default=True,
    help="Sampling seed: the same seed repeats the same text.",
)
@click.option(
    "--num-samples",
    type=COUNT,
    default=1,
    show_default=True,
    help="Continuations per prompt (useful with --temperature > 0).",
)
def generate(model, prompts, chars, temperature, top_k, seed, num_samples) -> None:
    """Continue prompts with the SavedModel of MODEL (a run folder or SavedModel folder).

    Needs only TensorFlow: the vocabulary, cleaning and generation loop are inside the
    SavedModel.

    \b
    Examples:
      tfrnn generate saved_models/gru-32 --prompt "it has"
      tfrnn generate saved_models/lstm-128 --prompt "the time" --chars 200 --temperature 0.8
    """
    serving.resolve_saved_model(model)
    import_tensorflow_quietly()
    loaded = serving.load(model)
    note = serving.unknown_note(serving.vocab_of(loaded), list(prompts), "prompt")
    if note:
        click.echo(note, err=True)
    batch = [p for p in prompts for _ in range(num_samples)]
    if chars * len(batch) > LONG_GENERATION:  # say what it is doing, and for about how long
        seconds = serving.generation_seconds(loaded, chars, len(batch))
        click.echo(f"generating {chars:,} characters x {len(batch)} (about {seconds:,.0f} s)...", err=True)
    for text in serving.generate(loaded, batch, chars, temperature, seed, top_k):
        click.echo(text)


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--text-file",
    type=click.Path(path_type=Path),
    default=None,
    help="UTF-8 text to score (cleaned like the training text).  [default: the test part "
    "of the runs' own text (book-preset runs)]",
)
@click.option(
    "--window",
    type=WINDOW,
    default=None,
    help="Score (WINDOW + 1)-character windows, each from a zero state, as training "
    "validates (hw4: 32; one model).  [default: the whole text from one zero state]",
)
@click.option(
    "--stride", type=WINDOW, default=None, help="Characters between window starts.  [default: WINDOW]"
)
@click.option(
    "--dynamic",
    is_flag=True,
    help="Also score with dynamic evaluation (Krause et al. 2018: the weights adapt to the "
    "text already read); its two settings are chosen on each run's validation part and "
    "stored in the run folder (dynamic.json). Reported apart from the static figures.",
)
def score(models, text_file, window, stride, dynamic) -> None:
    """Perplexity and bits per character of MODELS (run folders; one SavedModel folder
    too) on a text, the state carried through it.

    Several runs are also scored as an ensemble: their predicted probabilities averaged.

    \b
    Examples:
      tfrnn score saved_models/lstm-2x512-book                 # its text's test part
      tfrnn score RUN_A RUN_B --dynamic                        # ensemble, dynamic too
      tfrnn score saved_models/gru-32 --text-file chapter.txt --window 32 --stride 1
    """
    from tfrnn.data import read_text

    raw = read_text(text_file, "text file") if text_file is not None else None
    if len(models) == 1 and raw is not None and not dynamic:
        return _score_saved_model(models[0], raw, window, stride)
    if window is not None or stride is not None:
        raise TfrnnError("--window and --stride score one model on --text-file, without --dynamic")
    import_tensorflow_quietly()
    from tfrnn.scoring import score_runs

    result = score_runs(list(models), raw, dynamic, log=lambda line: click.echo(line, err=True))
    what = "the test part of the runs' text" if raw is None else str(text_file)
    click.echo(f"{result['characters']:,} characters of {what} predicted ({result['vocabulary']})")
    rows = [(Path(row["run"]).name, row) for row in result["runs"]]
    if "ensemble" in result:
        rows.append((f"ensemble of {len(models)}", result["ensemble"]))
    for name, row in rows:
        click.echo(f"{name:<28} static:  {_figures(row['static'])}")
        if "dynamic" in row:
            chosen = row.get("settings")
            how = f" (lr {chosen['lr']:g}, decay {chosen['decay']:g})" if chosen else ""
            click.echo(f"{'':<28} dynamic: {_figures(row['dynamic'])}{how}")


def _figures(nats: float) -> str:
    return f"perplexity {math.exp(nats):.3f}, {nats / math.log(2):.4f} bits/char, {nats:.4f} nats"


def _score_saved_model(model: Path, raw: str, window, stride) -> None:
    """``score`` of one SavedModel (or run folder) on one text, as TensorFlow alone serves it."""
    from tfrnn.data import clean

    serving.resolve_saved_model(model)
    serving.windows(raw, window, stride)  # checks the options before TensorFlow is imported
    import_tensorflow_quietly()
    loaded = serving.load(model)
    vocab = serving.vocab_of(loaded)
    note = serving.unknown_note(vocab, [raw], "text")
    if note:
        click.echo(note, err=True)
    text = clean(raw) if vocab.kind == "letters" else raw  # the characters the model reads
    texts = serving.windows(text, window, stride)
    longest = max(len(t) for t in texts)
    if longest > LONG_TEXT:  # say what it is doing, and for about how long
        seconds = serving.scoring_seconds(loaded, texts[0], longest)
        click.echo(
            f"scoring {sum(len(t) for t in texts):,} characters, each text read whole "
            f"(about {seconds:,.0f} s)...",
            err=True,
        )
    result = serving.score_texts(loaded, texts)
    click.echo(
        f"{result['characters']:,} characters in {len(texts):,} text(s): cross-entropy "
        f"{result['cross_entropy']:.4f} nats, perplexity {result['perplexity']:.3f}, "
        f"{result['cross_entropy'] / math.log(2):.4f} bits per character ({vocab.kind} vocabulary, "
        f"{len(vocab)} tokens)"
    )


@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--host", default="127.0.0.1", show_default=True, help="Address to listen on (localhost only by default)."
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=8501,
    show_default=True,
    help="Port (TF Serving's REST port).",
)
@click.option(
    "--concurrency",
    type=COUNT,
    default=2,
    show_default=True,
    help="Generations running at once; the rest wait.",
)
def serve(runs, host, port, concurrency) -> None:
    """Serve run folders over HTTP (TensorFlow Serving's REST API) with a page to try them.

    \b
    Endpoints: GET / (the page), GET /v1/models, GET /v1/models/NAME[/metadata],
    POST /v1/models/NAME:predict {"instances": ["it has", ...]} or {"instances":
    [{"prompt": "it has", "num_chars": 200, "temperature": 0.8, "top_k": 5, "seed": 0}]}.

    \b
    Examples:
      tfrnn serve saved_models/gru-32 saved_models/lstm-2x512-book
      curl -d '{"instances": ["it has"]}' localhost:8501/v1/models/gru-32:predict
    """
    for run in runs:
        serving.resolve_saved_model(run)  # a bad folder stops here, in one line
    import_tensorflow_quietly()
    from tfrnn.server import serve as run_server

    run_server(list(runs), host, port, concurrency, log=click.echo)


@cli.group()
def kernel() -> None:
    """The compiled CPU recurrence: build it ahead of time, or see its state."""


@kernel.command("build")
def kernel_build() -> None:
    """Build and self-check the compiled recurrence for this CPU now (e.g. in a container
    image); exits non-zero, with the reason, when it cannot be used."""
    from tfrnn import kernel as k

    if k.setting() == "off":
        raise TfrnnError("$TFRNN_KERNEL=off: nothing to build")
    import_tensorflow_quietly()
    if k.load() is None:
        raise TfrnnError(f"the compiled recurrence cannot be used: {k.status()}")
    click.echo(f"ready: {k.status()}")


@kernel.command("status")
def kernel_status() -> None:
    """Where the compiled recurrence is, its key, its state and why it is (not) used."""
    import_tensorflow_quietly()
    from tfrnn import kernel as k

    for key, value in k.describe().items():
        click.echo(f"{key + ':':<18} {value}")


@cli.command()
def info() -> None:
    """What a bug report needs: versions, CPU, GPU, the compiled recurrence, the data."""
    import_tensorflow_quietly()
    import platform

    import keras
    import tensorflow as tf

    from tfrnn import kernel as k
    from tfrnn.cpu import cpu_summary
    from tfrnn.data import DATA_ENV, book_path

    gpus = tf.config.list_physical_devices("GPU")
    built = tf.sysconfig.get_build_info()
    lines = {
        "tfrnn": __import__("tfrnn").__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpu": cpu_summary(),
        "gpu": ", ".join(g.name for g in gpus) or "none",
        "cuda/cudnn": f"{built.get('cuda_version', '-')} / {built.get('cudnn_version', '-')}",
        "kernel": k.status(),
        "kernel cache": str(k.cache_dir()),
        "default data": f"{book_path()}" + (f" (${DATA_ENV})" if os.environ.get(DATA_ENV) else " (embedded)"),
    }
    for key, value in lines.items():
        click.echo(f"{key + ':':<14} {value}")

"""What a hostile user tried (issue: never delete what tfrnn did not write, no traceback):
every case on real files and processes, nothing written outside the test's own folder."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.conftest import run_cli
from tests.test_errors import assert_one_line_error
from tfrnn.rundir import MARKER, RunPaths, is_run_folder, write_marker

TINY = ["--units", 4, "--epochs", 1, "--batch-size", 256, "--no-profile", "-q"]


def _fake_run(folder, *extra_files):
    """A folder as tfrnn leaves a run (its marker lists what it wrote), plus ``extra_files``."""
    folder.mkdir(parents=True)
    for name in ("model.keras", "vocab.json", "history.csv", "curves.png"):
        (folder / name).write_text("tfrnn")
    (folder / "saved_model").mkdir()
    (folder / "saved_model" / "saved_model.pb").write_text("tfrnn")
    (folder / "metrics.json").write_text(json.dumps({"config": {"cell": "gru"}}))
    write_marker(folder, [p.name for p in folder.iterdir()])
    for name in extra_files:
        if name.endswith("/"):
            (folder / name).mkdir()
            (folder / name / "sample.txt").write_text("mine")
        else:
            (folder / name).write_text("mine")
    return folder


def test_overwrite_refuses_a_run_folder_holding_the_user_s_files(tmp_path):
    out = _fake_run(tmp_path / "run", "notes.txt", "samples/")
    before = sorted(p.name for p in out.rglob("*"))
    result = run_cli("fit", *TINY, "--out", out, "--overwrite")
    assert_one_line_error(result, "holds files tfrnn did not write (notes.txt, samples/)")
    assert "nothing was changed" in result.stderr
    assert sorted(p.name for p in out.rglob("*")) == before
    assert (out / "notes.txt").read_text() == "mine"


def test_a_folder_that_only_looks_like_a_run_is_never_replaced(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "metrics.json").write_text(json.dumps({"config": {"anything": 1}}))
    (out / "vocab.json").write_text("{}")
    (out / "results.txt").write_text("another tool's results")
    assert not is_run_folder(out)
    for flags in ([], ["--overwrite"]):
        assert_one_line_error(run_cli("fit", *TINY, "--out", out, *flags), "not a tfrnn run folder")
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "results.txt", "vocab.json"]


def test_replacing_a_run_removes_only_what_tfrnn_wrote_and_never_a_neighbour(tmp_path):
    """The commit step itself: a user's `.NAME.old` beside the run survives, the old run's
    files go, a file that appeared in the old run after the check moves into the new one."""
    final = _fake_run(tmp_path / "run")
    neighbour = tmp_path / ".run.old"
    neighbour.mkdir()
    (neighbour / "keep.txt").write_text("mine")
    paths = RunPaths(final)
    paths.check(overwrite=True, resume=False)
    paths.begin({"cell": "gru"}, resume=False)
    (paths.partial / "metrics.json").write_text(json.dumps({"config": {"cell": "gru"}, "new": True}))
    (final / "late.txt").write_text("mine, written during training")
    paths.commit()
    assert (neighbour / "keep.txt").read_text() == "mine"
    assert json.loads((final / "metrics.json").read_text())["new"] is True
    assert (final / "late.txt").read_text() == "mine, written during training"
    assert not (final / "model.keras").exists()  # the old run's file, not rewritten by the new
    marker = json.loads((final / MARKER).read_text())
    assert (
        marker["tfrnn"] == "run" and "metrics.json" in marker["files"] and "late.txt" not in marker["files"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == [".run.old", "run"]


def test_a_user_s_partial_or_lock_named_like_tfrnn_s_is_not_touched(tmp_path):
    out = tmp_path / "run"
    partial = tmp_path / ".run.partial"
    partial.mkdir()
    (partial / "mine.txt").write_text("mine")
    assert_one_line_error(run_cli("fit", *TINY, "--out", out, "--overwrite"), "did not write")
    assert (partial / "mine.txt").read_text() == "mine"
    shutil.rmtree(partial)
    lock = tmp_path / ".run.lock"
    lock.write_text("my notes about the run\n")
    assert_one_line_error(run_cli("fit", *TINY, "--out", out), "is not a tfrnn lock")
    assert lock.read_text() == "my notes about the run\n" and not out.exists()


def test_a_report_folder_that_is_not_tfrnn_s_is_refused(tmp_path):
    out = tmp_path / "docs"
    out.mkdir()
    (out / "report.md").write_text("my own report")
    (out / "runs").mkdir()
    (out / "todo.txt").write_text("mine")
    result = run_cli("compare", "--cells", "gru", "--units", 4, "--layers", 1, "--epochs", 1, "--out", out)
    assert_one_line_error(result, "is not a tfrnn report folder")
    assert (out / "report.md").read_text() == "my own report"


def test_tune_overwrite_refuses_a_project_holding_the_user_s_files(tmp_path):
    from tuner.search import SPACE_FILE

    project = tmp_path / "tuning" / "p"
    project.mkdir(parents=True)
    (project / SPACE_FILE).write_text("{}")
    (project / "oracle.json").write_text("{}")
    (project / "notes.txt").write_text("mine")
    tiny = ["--tuner", "random", "--max-trials", 1, "--epochs", 1, "--cells", "gru", "--units", "4-4"]
    tiny += ["--layers", "1-1", "-q", "--directory", tmp_path / "tuning", "--project", "p", "--overwrite"]
    assert_one_line_error(run_cli("tune", *tiny), "holds files tfrnn did not write (notes.txt)")
    assert (project / "notes.txt").read_text() == "mine" and (project / "oracle.json").is_file()


def test_whole_numbers_where_floats_are_meant_are_taken(tmp_path):
    from tfrnn.compare import choose_grid
    from tfrnn.config import TrainConfig

    grid = tmp_path / "g.toml"
    grid.write_text('preset = "hw4"\nlr = 4\nclip = 1\ndropout = 0\n[[models]]\ncell = "gru"\nunits = 4\n')
    config = choose_grid(grid, None, None, None, None, None).configs[0]
    assert config.lr == 4.0 and isinstance(config.lr, float) and isinstance(config.clip, float)
    assert TrainConfig(time_budget=3).time_budget == 3.0


@pytest.mark.slow
def test_a_grid_with_an_integer_learning_rate_trains(tmp_path):
    grid = tmp_path / "g.toml"
    grid.write_text('lr = 4\nepochs = 1\nbatch_size = 256\n[[models]]\ncell = "gru"\nunits = 4\n')
    result = run_cli("compare", "--grid", grid, "--out", tmp_path / "report", "-q")
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "report" / "results.json").read_text())
    assert rows[0]["status"] == "ok", rows[0]
    metrics = json.loads((tmp_path / "report" / "runs" / "gru-4" / "metrics.json").read_text())
    assert metrics["config"]["lr"] == 4.0


def test_resume_with_another_epoch_count_under_a_cosine_schedule_is_refused(tmp_path):
    out = tmp_path / "run"
    partial = tmp_path / ".run.partial"
    args = ["--optimizer", "adam", "--schedule", "cosine", "--units", 4, "--out", out, "--no-profile", "-q"]
    # an interrupted run started with 5 epochs: its options as tfrnn recorded them
    from tfrnn.config import TrainConfig

    config = TrainConfig.resolve("hw4", optimizer="adam", schedule="cosine", units=4, epochs=5)
    partial.mkdir()
    (partial / "config.json").write_text(json.dumps(config.to_dict()))
    result = run_cli("fit", *args, "--epochs", 8, "--resume")
    assert_one_line_error(result, "epochs 5 vs 8 (the cosine schedule is spread over --epochs)")
    paths = RunPaths(out)
    constant = TrainConfig.resolve("hw4", units=4, epochs=5).to_dict()
    (partial / "config.json").write_text(json.dumps(constant))
    assert paths.differences({**constant, "epochs": 8}) == []  # a constant rate: the same run


def test_resume_of_a_finished_run_says_it_is_finished(tmp_path):
    out = _fake_run(tmp_path / "run")
    assert_one_line_error(
        run_cli("fit", *TINY, "--out", out, "--resume"), "is a finished run: there is nothing"
    )


@pytest.mark.slow
def test_init_from_a_one_hot_run_under_the_book_preset_is_refused_before_any_folder(small_run, tmp_path):
    out = tmp_path / "book"
    result = run_cli("fit", "--preset", "book", "--init-from", small_run["dir"], "--epochs", 1, "--out", out)
    assert_one_line_error(result, "has another architecture than this run (embedding None vs 64)")
    assert "--preset hw4" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_an_empty_tfds_slice_is_one_line(tmp_path):
    from tfrnn.tfds_source import load_texts

    load_texts("tfds:time_machine")  # prepared first: TFDS draws progress bars while it prepares
    result = run_cli("fit", *TINY, "--data", "tfds:time_machine:train[:10%]", "--out", tmp_path / "run")
    assert_one_line_error(result, "holds no text (examples per split: train 1)")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "encoding, bom",
    [
        ("utf-8", b"\xef\xbb\xbf"),
        ("utf-16-le", b"\xff\xfe"),
        ("utf-16-be", b"\xfe\xff"),
        ("utf-32-le", b"\xff\xfe\x00\x00"),
    ],
)
def test_a_byte_order_mark_is_not_text_and_utf16_32_are_read(tmp_path, encoding, bom):
    from tfrnn.data import Corpus, read_text

    text = "The Time Traveller (for so it will be convenient to speak of him) — é, î.\n" * 50
    plain, marked = tmp_path / "plain.txt", tmp_path / "marked.txt"
    plain.write_bytes(text.encode("utf-8"))
    marked.write_bytes(bom + text.encode(encoding))
    assert read_text(marked) == text
    assert Corpus.load(marked).fingerprint == Corpus.load(plain).fingerprint


def test_utf16_without_a_mark_is_named(tmp_path):
    data = tmp_path / "u16.txt"
    data.write_bytes("some text to learn from ".encode("utf-16-le") * 100)
    result = run_cli("fit", *TINY, "--data", data, "--out", tmp_path / "run")
    assert_one_line_error(result, "UTF-16 or UTF-32 text needs a byte-order mark")


def test_divergence_advice_fits_the_clipping():
    from tfrnn.errors import TrainingDiverged
    from tfrnn.train import StopOnNaN

    for clip, advice in ((1.0, "a smaller --clip"), (None, "--clip 1 (clipping is off)")):
        with pytest.raises(TrainingDiverged, match=advice.replace("(", r"\(").replace(")", r"\)")):
            StopOnNaN(clip).on_epoch_end(0, {"loss": float("nan")})


@pytest.mark.slow
def test_ctrl_c_before_the_first_epoch_keeps_nothing_and_says_so(tmp_path):
    from tests.conftest import failing_in_epoch

    out = tmp_path / "run"
    with failing_in_epoch(1):
        result = run_cli("fit", *TINY, "--out", out)
    assert result.exit_code == 130
    assert "nothing was kept" in result.stderr and "--resume" not in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_generation_never_writes_unk_and_says_how_long_a_long_one_takes(small_run):
    hot = run_cli("generate", small_run["dir"], "--prompt", "it", "--chars", 400, "--temperature", 1e6)
    text = hot.stdout.rstrip("\n")
    assert hot.exit_code == 0 and len(text) == 402 and "?" not in text  # <unk> shows as '?'
    long = run_cli("generate", small_run["dir"], "--prompt", "it", "--chars", 25_000)
    assert long.exit_code == 0 and len(long.stdout.rstrip("\n")) == 25_002
    assert "generating 25,000 characters x 1 (about " in long.stderr


@pytest.mark.slow
def test_score_says_which_letters_the_study_s_cleaning_turns_into_spaces(small_run, tmp_path):
    import subprocess
    import sys

    from tests.conftest import subprocess_env

    text = tmp_path / "accents.txt"
    text.write_text("le café du naïf, près de l'hôtel " * 10, encoding="utf-8")
    result = run_cli("score", small_run["dir"], "--text-file", text)
    assert result.exit_code == 0
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "read as spaces (letters vocabulary)" in notes[0]
    assert "'é' x" in notes[0] and "'ï' x" in notes[0] and "'è' x" in notes[0] and "'ô' x" in notes[0]
    # the installed command, as a user runs it: nothing but its own lines on stderr
    env = {k: v for k, v in subprocess_env().items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    proc = subprocess.run(
        [sys.executable, "-m", "tfrnn", "generate", str(small_run["dir"]), "--prompt", "it has"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr

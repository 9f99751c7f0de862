"""tf.distribute: mirrored over logical CPUs, two multi-worker processes, one-device parity."""

from __future__ import annotations

import csv
import json
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.conftest import run_cli, subprocess_env
from tests.test_errors import assert_one_line_error
from tests.test_fit import RUN_FILES

FIT = [sys.executable, "-m", "tfrnn", "fit", "--units", "8", "--epochs", "2", "--no-profile", "-q"]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _history(run) -> list[dict]:
    with open(run / "history.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.mark.slow
def test_mirrored_on_two_logical_cpus(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.run(
        [*FIT, "--strategy", "mirrored", "--out", str(out)],
        capture_output=True,
        text=True,
        env=subprocess_env(TFRNN_CPU_DEVICES="2"),
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "strategy mirrored: 2 replica(s)" in proc.stdout
    assert {p.name for p in out.iterdir()} == RUN_FILES
    history = _history(out)
    assert history[1]["loss"] < history[0]["loss"] and history[1]["val_loss"] < history[0]["val_loss"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == {"name": "MirroredStrategy", "replicas": 2}


@pytest.mark.slow
def test_two_multi_worker_processes_and_only_the_chief_writes(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    out = tmp_path / "run"
    procs = []
    for index in (0, 1):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(
            subprocess.Popen(
                [*FIT, "--strategy", "multi-worker", "--out", str(out)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=subprocess_env(TF_CONFIG=tf_config),
                cwd=tmp_path,
            )
        )
    ends = [proc.communicate(timeout=300) for proc in procs]
    for index, (proc, (_, stderr)) in enumerate(zip(procs, ends)):
        assert proc.returncode == 0, f"worker {index}: {stderr}\nworker {1 - index}: {ends[1 - index][1]}"
    outputs = [stdout for stdout, _ in ends]
    assert f"saved {out}" in outputs[0] and "the chief writes the run folder" in outputs[1]
    assert f"saved {out}" not in outputs[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no worker leftovers
    assert {p.name for p in out.iterdir()} == RUN_FILES
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"]["replicas"] == 2
    worker_ppl = float(outputs[1].split("validation perplexity ")[1].split(")")[0])
    assert worker_ppl == pytest.approx(metrics["final_val_perplexity"], rel=1e-3)  # aggregated logs
    from tfrnn import serving

    text = serving.generate(serving.load(out), ["it has"], 20)[0]
    assert text == "it has" + metrics["continuations"]["it has"]


@pytest.mark.slow
def test_mirrored_on_one_device_matches_the_default_within_seed_noise(tmp_path, book):
    # The distributed input pipeline orders batches differently, so single runs differ by
    # the data order; across seeds the two agree (2 epochs: seed-to-seed spread is ~±5%).
    from tfrnn.config import TrainConfig
    from tfrnn.distribute import make_strategy
    from tfrnn.experiment import load_data
    from tfrnn.rundir import read_history
    from tfrnn.train import fit

    ppl = {"default": [], "mirrored": []}
    for strategy in ppl:
        for seed in (0, 1, 2):
            config = TrainConfig.resolve("hw4", units=8, epochs=2, seed=seed)
            corpus, splits = load_data(config, book)
            work = tmp_path / f"{strategy}-{seed}"
            fit(
                config,
                splits,
                28,
                work,
                verbose=0,
                strategy=make_strategy(strategy) if strategy != "default" else None,
            )
            ppl[strategy].append(read_history(work / "history.csv")[-1]["val_perplexity"])
    mean = {k: sum(v) / len(v) for k, v in ppl.items()}
    assert mean["mirrored"] == pytest.approx(mean["default"], rel=0.04)


@pytest.mark.parametrize(
    "tf_config, expected",
    [
        (None, "needs $TF_CONFIG"),
        ("not json", "$TF_CONFIG must be JSON"),
        ('{"cluster": {}}', "$TF_CONFIG must be JSON"),
    ],
)
def test_multi_worker_needs_a_valid_tf_config(tmp_path, monkeypatch, tf_config, expected):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    out = tmp_path / "run"
    assert_one_line_error(run_cli("fit", "--strategy", "multi-worker", "--out", out), expected)
    assert not out.exists()


def test_non_chief_workers_keep_their_training_state_beside_the_run(tmp_path, monkeypatch):
    """Not in a temporary folder: after an interruption every worker resumes where the chief
    does (the multi-worker run above checks that nothing is left once training ends)."""
    from types import SimpleNamespace

    from tfrnn import experiment
    from tfrnn.rundir import RunPaths

    strategy = SimpleNamespace(cluster_resolver=SimpleNamespace(task_id=1, task_type="worker"))
    assert experiment.worker_dir(RunPaths(tmp_path / "run"), strategy) == tmp_path / ".run.worker-1"
    seen = {}

    def fake_fit(config, splits, vocab, workdir, *args, **kwargs):
        seen["workdir"] = workdir
        raise KeyboardInterrupt

    monkeypatch.setattr("tfrnn.train.fit", fake_fit)
    from tfrnn.config import TrainConfig

    with pytest.raises(KeyboardInterrupt):
        experiment._train_as_worker(
            TrainConfig.resolve("hw4", units=8, epochs=1),
            RunPaths(tmp_path / "run"),
            None,
            strategy,
            0,
            False,
            False,
            "off",
        )
    assert seen["workdir"] == tmp_path / ".run.worker-1"


@pytest.mark.slow
def test_multi_worker_gives_up_on_a_missing_peer_in_one_line(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}})
    env = subprocess_env(TF_CONFIG=tf_config, TFRNN_PEER_TIMEOUT="3")
    started = time.monotonic()
    proc = subprocess.run(
        [*FIT, "--strategy", "multi-worker", "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode != 0 and time.monotonic() - started < 60
    assert f"waiting for the other workers (127.0.0.1:{ports[1]})" in proc.stdout
    assert "did not join within 3 s" in proc.stderr and "Traceback" not in proc.stderr
    # Ctrl-C while waiting ends it at once
    proc = subprocess.Popen(
        [*FIT, "--strategy", "multi-worker", "--out", str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(TF_CONFIG=tf_config),
        cwd=tmp_path,
    )
    deadline, said = time.monotonic() + 120, ""
    while "waiting for the other workers" not in said and time.monotonic() < deadline:
        if select.select([proc.stdout], [], [], 1)[0]:
            said += proc.stdout.readline()
    assert "waiting for the other workers" in said
    time.sleep(1)  # into the wait
    waiting_since = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert proc.returncode != 0 and time.monotonic() - waiting_since < 10

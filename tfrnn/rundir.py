"""Run folders: written whole or not at all, by one process at a time, replacing only
what tfrnn wrote.

A run trains inside ``<parent>/.<name>.partial/`` (history and Keras backup state live
there, so ``--resume`` can continue it) and is renamed to ``<parent>/<name>/`` only once
every file of the finished run is in place. While it trains, the process holds a lock on
``<parent>/.<name>.lock``: a second process on the same run is refused in one line that
names the first. ``--overwrite`` replaces a folder only when it is a tfrnn run (or empty).
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tfrnn.config import TrainConfig, with_defaults
from tfrnn.errors import ConfigError, TfrnnError

DEFAULT_ROOT = Path("saved_models")
#: Files a run keeps in its partial folder while it trains, removed when it is committed:
#: Keras' BackupAndRestore state, the best epoch's weights, the finished training's weights.
BACKUP_DIR = "backup"
BEST_WEIGHTS = "best.weights.h5"
TRAINED_WEIGHTS = "trained.weights.h5"
#: Written into the partial folder when training failed, with the reason.
FAILED = "failed.txt"


#: The marker only tfrnn writes into a run folder: the run's identity and the entries it
#: wrote there. ``--overwrite`` replaces a folder only when it holds one, and removes only
#: the entries it lists.
MARKER = ".tfrnn-run.json"
#: What a run folder written before the marker existed may hold (nothing else).
LEGACY_RUN_FILES = frozenset(
    {"model.keras", "saved_model", "vocab.json", "history.csv", "metrics.json", "curves.png"}
)


def read_marker(path: Path, kind: str = "run") -> dict | None:
    """The tfrnn marker of ``kind`` in folder ``path`` (``MARKER`` for runs), or None."""
    marker = path / (MARKER if kind == "run" else f".tfrnn-{kind}.json")
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not (isinstance(data, dict) and data.get("tfrnn") == kind and isinstance(data.get("files"), list)):
        return None
    return data


def write_marker(path: Path, files: list[str], kind: str = "run", **identity) -> None:
    """Record in ``path`` that tfrnn wrote these entries of it (atomically: a temporary
    file renamed into place)."""
    name = MARKER if kind == "run" else f".tfrnn-{kind}.json"
    previous = read_marker(path, kind) or {}
    data = {
        "tfrnn": kind,
        "id": previous.get("id") or uuid.uuid4().hex,
        **identity,
        "files": sorted(set(files) - {name}),
    }
    tmp = path / f"{name}.tmp"
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path / name)


def _legacy_run(path: Path) -> bool:
    """A run folder an earlier tfrnn wrote (no marker): only its known files, and a
    metrics.json that tfrnn's reader accepts, with tfrnn's own fields."""
    names = {p.name for p in path.iterdir()}
    if not names <= LEGACY_RUN_FILES or "metrics.json" not in names or "vocab.json" not in names:
        return False
    try:
        metrics = read_metrics(path)
    except (TfrnnError, OSError):
        return False
    return {"cell", "preset"} <= set(metrics["config"]) and "training_seconds" in metrics


def written_by_tfrnn(path: Path) -> set[str] | None:
    """The entries of folder ``path`` that tfrnn wrote as a run, or None if it is no run."""
    if not path.is_dir():
        return None
    marker = read_marker(path)
    if marker is not None:
        return {*marker["files"], MARKER}
    return set(LEGACY_RUN_FILES) if _legacy_run(path) else None


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` is a folder tfrnn wrote as a run (its marker, or a run of an earlier
    tfrnn), or an empty folder."""
    if not path.is_dir():
        return False
    return not any(path.iterdir()) or written_by_tfrnn(path) is not None


def foreign_entries(path: Path, ours: set[str]) -> list[str]:
    """Entries of ``path`` not among ``ours``, as a user would list them (folders with /)."""
    return sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir() if p.name not in ours)


def refuse_foreign(path: Path, ours: set[str], what: str = "run folder") -> None:
    """Refuse, in one line naming them, to replace a ``what`` holding entries tfrnn did not write."""
    foreign = foreign_entries(path, ours)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise TfrnnError(
            f"{path} holds files tfrnn did not write ({shown}): --overwrite replaces only what "
            f"tfrnn wrote, so nothing was changed; move them out of the {what} first"
        )


def unique_sibling(path: Path, label: str) -> Path:
    """A name beside ``path`` that nothing has: ``.NAME.LABEL-<random>``."""
    while True:
        candidate = path.parent / f".{path.name}.{label}-{uuid.uuid4().hex[:12]}"
        if not candidate.exists():
            return candidate


def remove_written(path: Path, ours: set[str]) -> None:
    """Remove from ``path`` only the entries in ``ours``, then the folder if nothing is left."""
    for name in ours:
        entry = path / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.rmdir()


_HELD: set[Path] = set()  # the locks this process holds


def _lock_like(path: Path) -> bool:
    """Whether ``path`` is a lock file as tfrnn leaves one: a regular file, empty or a pid."""
    try:
        return (
            path.is_file()
            and path.stat().st_size <= 32
            and path.read_text().strip().isdigit()
            or (path.stat().st_size == 0)
        )
    except (OSError, UnicodeDecodeError):
        return False


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_file`` (naming this process) while the block runs;
    refuse in one line, naming the holder, when another process holds it. Re-entrant
    within one process."""
    key = lock_file.absolute()
    if key in _HELD:
        yield
        return
    if lock_file.is_symlink() or (lock_file.exists() and not _lock_like(lock_file)):
        raise TfrnnError(
            f"{lock_file} exists and is not a tfrnn lock: tfrnn does not touch files it did not "
            "write; move it away first"
        )
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_file, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise TfrnnError(f"cannot write in {lock_file.parent}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise TfrnnError(
                f"{what} is in use by another tfrnn process (pid {holder}): wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)
            with contextlib.suppress(OSError):
                lock_file.unlink()
    finally:
        os.close(fd)


@dataclass(frozen=True)
class RunPaths:
    final: Path

    @property
    def partial(self) -> Path:
        return self.final.parent / f".{self.final.name}.partial"

    @property
    def config_file(self) -> Path:
        return self.partial / "config.json"

    @property
    def lock_file(self) -> Path:
        return self.final.parent / f".{self.final.name}.lock"

    def lock(self) -> contextlib.AbstractContextManager:
        """Hold the run for this process (``exclusive``)."""
        return exclusive(self.lock_file, f"the run {self.final}")

    def check(self, overwrite: bool, resume: bool, held_elsewhere: bool = True) -> None:
        """Refuse to clobber a finished run, a folder tfrnn did not write, a run another
        process holds (unless ``held_elsewhere`` is False: a multi-worker cluster's other
        workers, while their chief holds it), or to silently drop an interrupted or failed one."""
        if self.final.exists() and not self.final.is_dir():
            raise TfrnnError(f"{self.final} exists and is not a folder")
        if self.final.exists() and not is_run_folder(self.final):
            raise TfrnnError(
                f"{self.final} exists and is not a tfrnn run folder: tfrnn replaces only folders "
                "it wrote; choose another --out"
            )
        if self.final.exists() and not overwrite:
            if resume and not self.partial.exists():
                raise TfrnnError(
                    f"{self.final} is a finished run: there is nothing to resume (pass --overwrite "
                    "to train it again)"
                )
            raise TfrnnError(f"{self.final} already exists: pass --overwrite to replace it")
        if self.final.is_dir() and overwrite:
            refuse_foreign(self.final, written_by_tfrnn(self.final) or set())
        if held_elsewhere:
            with self.lock():  # only to see whether another process holds the run now
                pass
        if self.partial.exists() and not (resume or overwrite):
            failed = self.partial / FAILED
            if failed.is_file():
                raise TfrnnError(
                    f"the run in {self.partial} failed ({failed.read_text().strip()}): pass "
                    "--resume to continue from its last completed epoch or --overwrite to start over"
                )
            raise TfrnnError(
                f"an interrupted run is in {self.partial}: pass --resume to continue it "
                "or --overwrite to start over"
            )

    def record_failure(self, reason: str) -> None:
        """Note in the partial folder why the run failed (``check`` reports it)."""
        if self.partial.is_dir():
            (self.partial / FAILED).write_text(reason + "\n")

    def completed_epochs(self) -> int:
        """Epochs the interrupted run in the partial folder completed (0 if none)."""
        history = self.partial / "history.csv"
        return len(read_history(history)) if history.is_file() else 0

    def differences(self, config: dict) -> list[str] | None:
        """How ``config`` differs from the interrupted run's (epochs may change on resume,
        unless the cosine schedule spreads over them);
        None when there is no interrupted run to compare with."""
        if not (self.partial.exists() and self.config_file.is_file()):
            return None
        saved = with_defaults(json.loads(self.config_file.read_text()))
        # a constant or plateau schedule does not depend on the epoch count: a resumed run
        # with more (or fewer) epochs is the run a fresh command with that count trains
        epochs_matter = config.get("schedule") == "cosine" and not config.get("time_budget")
        return [
            f"{k} {saved.get(k)!r} vs {config[k]!r}"
            + (" (the cosine schedule is spread over --epochs)" if k == "epochs" else "")
            for k in sorted(config)
            if (k != "epochs" or epochs_matter) and saved.get(k) != config[k]
        ]

    def begin(self, config: dict, resume: bool) -> bool:
        """Create (or reuse, when resuming) the partial folder; True if a run is resumed."""
        differ = self.differences(config) if resume else None
        if differ is not None:
            if differ:
                what = ", ".join(differ)
                raise ConfigError(f"cannot resume {self.partial}: it was started with other options ({what})")
            self.config_file.write_text(json.dumps(config, indent=2))
            (self.partial / FAILED).unlink(missing_ok=True)
            return True
        if self.partial.exists():
            if not self.is_partial(self.partial):
                raise TfrnnError(f"{self.partial} holds files tfrnn did not write: move them away first")
            shutil.rmtree(self.partial)
        self.partial.mkdir(parents=True)
        write_marker(self.partial, [], kind="partial")
        self.config_file.write_text(json.dumps(config, indent=2))
        return False

    @staticmethod
    def is_partial(folder: Path) -> bool:
        """Whether ``folder`` is a partial run tfrnn made (its marker, or an earlier tfrnn's
        config.json or history.csv in it)."""
        return read_marker(folder, "partial") is not None or (
            (folder / "config.json").is_file() or (folder / "history.csv").is_file()
        )

    def discard(self) -> None:
        """Remove the partial folder (a run that cannot be continued)."""
        if self.partial.is_dir() and self.is_partial(self.partial):
            shutil.rmtree(self.partial, ignore_errors=True)

    def commit(self) -> Path:
        """Move the finished partial folder into place, replacing an older run: only what
        tfrnn wrote of it is removed (the check refused folders holding anything else; a
        file added since is moved into the new run)."""
        shutil.rmtree(self.partial / BACKUP_DIR, ignore_errors=True)
        for name in (BEST_WEIGHTS, TRAINED_WEIGHTS, FAILED):
            (self.partial / name).unlink(missing_ok=True)
        self.config_file.unlink(missing_ok=True)
        (self.partial / ".tfrnn-partial.json").unlink(missing_ok=True)
        write_marker(self.partial, [p.name for p in self.partial.iterdir()], name=self.final.name)
        old = None
        if self.final.exists():
            ours = written_by_tfrnn(self.final) or set()
            old = unique_sibling(self.final, "replaced")
            self.final.rename(old)
        self.partial.rename(self.final)
        if old is not None:
            remove_written(old, ours)
            if old.exists():  # something appeared after the check: keep it, in the new run
                for entry in old.iterdir():
                    if not (self.final / entry.name).exists():
                        entry.rename(self.final / entry.name)
                with contextlib.suppress(OSError):
                    old.rmdir()
        return self.final


def read_metrics(run_dir: Path, what: str = "") -> dict:
    """The ``metrics.json`` of a finished run folder, or a one-line error saying it is not one.

    ``what`` names the option or argument that gave the folder, for the message.
    """
    run_dir = Path(run_dir)
    label = f"{what} {run_dir}" if what else str(run_dir)
    metrics_file = run_dir / "metrics.json"
    if not run_dir.is_dir():
        raise TfrnnError(f"{label} is not a folder")
    if not metrics_file.is_file():
        raise TfrnnError(f"{label} is not a tfrnn run folder (no metrics.json)")
    try:
        metrics = json.loads(metrics_file.read_text())
    except (ValueError, UnicodeDecodeError):
        raise TfrnnError(f"{metrics_file} is not valid JSON: the run folder is damaged") from None
    if not isinstance(metrics, dict) or not isinstance(metrics.get("config"), dict):
        raise TfrnnError(f"{metrics_file} holds no run configuration: the run folder is damaged")
    return metrics


def read_run(run_dir: Path, what: str = "") -> tuple[dict, TrainConfig]:
    """``read_metrics`` and the run's ``TrainConfig``, or a one-line error saying why not."""
    metrics = read_metrics(run_dir, what)
    try:
        return metrics, TrainConfig(**metrics["config"])
    except (TypeError, ConfigError) as exc:
        raise TfrnnError(
            f"{Path(run_dir) / 'metrics.json'} holds a configuration tfrnn cannot read ({exc})"
        ) from None


def read_history(path: Path, one_based: bool = False) -> list[dict]:
    """Per-epoch rows of a Keras ``CSVLogger`` file (epochs counted from 0), or of a run
    folder's ``history.csv`` (``one_based``: as ``write_history`` writes them); returned
    with epochs counted from 1, repeated epochs dropped."""
    rows: dict[int, dict] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            epoch = int(float(row.pop("epoch"))) + (0 if one_based else 1)
            rows[epoch] = {"epoch": epoch, **{k: float(v) for k, v in row.items()}}
    return [rows[e] for e in sorted(rows)]


def write_history(rows: list[dict], path: Path) -> None:
    """Write per-epoch rows as CSV (epoch first, then the logged figures)."""
    keys = ["epoch", "loss", "perplexity", "val_loss", "val_perplexity", "epoch_seconds"]
    keys += [k for k in rows[0] if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

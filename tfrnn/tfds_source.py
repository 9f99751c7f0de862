"""Text from TensorFlow Datasets: ``--data tfds:NAME[/CONFIG][:SPLIT][#FEATURE]``.

``tensorflow_datasets`` is imported only here, and only when such a source is read: the
CLI's start-up, ``tfrnn generate`` and loading a SavedModel never pay for it.

* The text feature is found by type (``tfds.features.Text``), or named with ``#FEATURE``
  when the dataset has several.
* Without ``:SPLIT``, a dataset with ``train``, ``validation`` and ``test`` splits gives the
  book preset its three parts (``tiny_shakespeare``); any other gives its ``train`` split
  (or its only one) as one text, which the preset splits itself. ``:SPLIT`` (TFDS' syntax,
  ``train[:10%]`` too) always gives one text.
* The examples of a split are joined with newlines (cleaning makes them one space).
* ``time_machine`` is tfrnn's own builder (``tfrnn/datasets/time_machine``).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from tfrnn.errors import DataError, one_line
from tfrnn.texts import PREFIX, is_tfds  # noqa: F401  (re-exported)

SYNTAX = "tfds:NAME[/CONFIG][:SPLIT][#FEATURE]"
#: The split names that map onto the book preset's train, validation and test parts.
PARTS = ("train", "validation", "test")
_NAME = re.compile(r"[a-z][a-z0-9_]*(/[A-Za-z0-9_.+-]+)?")


@dataclass(frozen=True)
class TfdsSource:
    """A parsed ``tfds:`` source."""

    name: str
    split: str | None = None
    feature: str | None = None

    @classmethod
    def parse(cls, source: str) -> TfdsSource:
        """Parse ``tfds:NAME[/CONFIG][:SPLIT][#FEATURE]``; a one-line error if malformed."""
        rest = source.removeprefix(PREFIX)
        rest, _, feature = rest.partition("#")
        name, _, split = rest.partition(":")
        if not _NAME.fullmatch(name) or (":" in rest and not split) or ("#" in source and not feature):
            raise DataError(f"bad TFDS source {source!r}: spell it {SYNTAX}, e.g. tfds:tiny_shakespeare")
        return cls(name, split or None, feature or None)

    def __str__(self) -> str:
        split = f":{self.split}" if self.split else ""
        feature = f"#{self.feature}" if self.feature else ""
        return f"{PREFIX}{self.name}{split}{feature}"


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:  # pragma: no cover - a dependency, but say what to do if it is gone
        raise DataError("tfds: sources need tensorflow-datasets: pip install tensorflow-datasets") from None
    import tfrnn.datasets.time_machine.time_machine_dataset_builder  # noqa: F401  registers time_machine

    return tfds


def _reason(exc: BaseException) -> str:
    text = one_line(exc)
    return (text[:200] + "...") if len(text) > 200 else text


def unreachable(url: str, timeout: float = 10) -> str | None:
    """Why ``url`` cannot be reached (None if it answers): one try, honouring proxy settings.

    TFDS retries a failed download ten times with back-off (3.4 minutes offline); this says
    at once that there is no way through."""
    import requests

    try:
        requests.head(url, timeout=timeout, allow_redirects=True)
    except (requests.ConnectionError, requests.Timeout) as exc:
        return _reason(exc)
    return None


def _text_feature(tfds, builder, src: TfdsSource) -> str:
    features = builder.info.features
    names = list(features.keys())
    texts = [k for k in names if isinstance(features[k], tfds.features.Text)]
    if src.feature is not None:
        if src.feature not in names:
            raise DataError(f"{src} has no feature {src.feature!r} (its features: {', '.join(names)})")
        if src.feature not in texts:
            raise DataError(
                f"{src}: feature {src.feature!r} is not text (text features: {', '.join(texts) or 'none'})"
            )
        return src.feature
    if not texts:
        raise DataError(f"{src} has no text feature to train on (its features: {', '.join(names)})")
    if len(texts) > 1:
        raise DataError(
            f"{src} has several text features ({', '.join(texts)}): name one, e.g. {src}#{texts[0]}"
        )
    return texts[0]


def _split_names(builder) -> list[str]:
    """The dataset's splits: TFDS records them when it prepares a dataset. A builder that
    records none (TFDS' mock, in tests) is asked for each of the three parts' names."""
    names = list(builder.info.splits.keys())
    if names:
        return names
    readable = []
    for name in PARTS:
        try:
            builder.as_dataset(split=name)
        except (ValueError, KeyError):
            continue
        readable.append(name)
    return readable


def _read(tfds, builder, split: str, feature: str, source: str = "") -> str:
    """The examples of ``split`` joined with newlines; a one-line error when the split (a
    slice such as ``train[:10%]`` of a one-example split) selects nothing."""
    try:
        ds = builder.as_dataset(split=split, shuffle_files=False)
        ds = ds.map(lambda example: example[feature]).batch(4096)
        chunks = [t.decode("utf-8", errors="replace") for batch in tfds.as_numpy(ds) for t in batch]
    except Exception as exc:  # TFDS raises AssertionError/ValueError for empty or bad slices
        if "no data" not in str(exc):
            raise DataError(
                f"cannot read split {split!r} of {source or builder.name}: {_reason(exc)}"
            ) from None
        chunks = []
    text = "\n".join(chunks)
    if not text.strip():
        counts = {name: info.num_examples for name, info in builder.info.splits.items()}
        raise DataError(
            f"split {split!r} of {source or builder.name} holds no text (examples per split: "
            f"{', '.join(f'{k} {v}' for k, v in counts.items()) or 'unknown'}); TFDS slices whole "
            "examples, so a percentage of a one-example split is empty: name the whole split"
        )
    return text


@functools.lru_cache(maxsize=4)
def load_texts(source: str) -> dict[str, str]:
    """The text of ``source``: ``{"text": ...}``, or ``{"train", "validation", "test"}``
    when the dataset has those three splits and no split was named."""
    src = TfdsSource.parse(source)
    tfds = _import_tfds()
    try:
        builder = tfds.builder(src.name)
    except Exception as exc:  # DatasetNotFoundError, and config errors (ValueError)
        if "not found" in str(exc).lower() or isinstance(exc, tfds.core.registered.DatasetNotFoundError):
            raise DataError(
                f"unknown TFDS dataset {src.name!r}: spell one as {SYNTAX}, e.g. tfds:tiny_shakespeare "
                "or tfds:time_machine (tfds.list_builders() lists them)"
            ) from None
        raise DataError(f"cannot open TFDS dataset {src.name!r}: {_reason(exc)}") from None
    feature = _text_feature(tfds, builder, src)
    urls = [] if builder.is_prepared() else list(builder.url_infos or {})
    reason = unreachable(urls[0]) if urls and src.name != "time_machine" else None  # it checks itself
    offline = (
        f"on a machine without network, build it where there is one (tfds build "
        f"{src.name.split('/')[0]}) and copy it into {builder.data_dir_root}"
    )
    if reason:
        raise DataError(
            f"could not prepare {src}: its download ({urls[0]}) cannot be reached ({reason}); {offline}"
        )
    try:
        builder.download_and_prepare()
    except DataError:
        raise
    except Exception as exc:  # no network, a failed download, a damaged dataset folder
        raise DataError(f"could not prepare {src} ({_reason(exc)}); {offline}") from None
    splits = _split_names(builder)
    if src.split is not None:
        base = re.split(r"[\[+]", src.split, maxsplit=1)[0]
        if base not in splits:
            raise DataError(f"{src} has no split {base!r} (its splits: {', '.join(splits)})")
        return {"text": _read(tfds, builder, src.split, feature, str(src))}
    if all(name in splits for name in PARTS):
        return {name: _read(tfds, builder, name, feature, str(src)) for name in PARTS}
    if "train" in splits or len(splits) == 1:
        return {"text": _read(tfds, builder, "train" if "train" in splits else splits[0], feature, str(src))}
    raise DataError(
        f"{src} has several splits ({', '.join(splits)}): name one, e.g. {PREFIX}{src.name}:{splits[0]}"
    )

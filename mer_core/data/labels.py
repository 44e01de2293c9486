"""Label files of a MERTools-style feature directory: the challenge CSV or `label-6way.npz`.

Both are read into one `{sample name: label string}` map; an empty label means "unlabelled".
The `.npz` stores pickled dicts, and unpickling can run arbitrary code, so it is read only
when the user set `data.features.trust_pickle: true`.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mer_core.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

NAME_COLUMNS = ("name", "names", "sample", "sample_name", "video", "video_name", "filename", "file")
LABEL_COLUMNS = ("label", "labels", "emo", "emotion", "discrete", "discrete_label")


def resolve_label_path(root: Path, labels: str) -> Path:
    """`labels` as given when absolute, else relative to the feature root."""
    path = Path(labels).expanduser()
    return path if path.is_absolute() else root / path


def check_label_trust(path: Path, *, trust_pickle: bool) -> None:
    """Refuses a pickled `.npz` label file unless trusted (checked before any cache lookup)."""
    if path.suffix == ".npz" and not trust_pickle:
        raise DataError(
            f"label file {path} is a pickled .npz (MERTools label-6way.npz); unpickling can run code, "
            "so it is read only if you trust the file: set data.features.trust_pickle=true"
        )


def read_labels(path: Path, *, label_split: str, trust_pickle: bool) -> dict[str, str]:
    """Reads sample name -> label string ("" = unlabelled).

    Args:
        path: A CSV (name and discrete-label columns) or a MERTools `label-6way.npz`.
        label_split: Which entry of the `.npz` to read (e.g. "train_corpus").
        trust_pickle: Whether the `.npz` may be unpickled.

    Returns:
        An insertion-ordered map of sample name to stripped label.

    Raises:
        DataError: Missing file, unrecognised columns, duplicate names, untrusted or malformed `.npz`.
    """
    if not path.is_file():
        raise DataError(f"label file not found: {path} (data.features.labels)")
    check_label_trust(path, trust_pickle=trust_pickle)
    if path.suffix == ".npz":
        return _read_npz(path, label_split)
    return _read_csv(path)


def _read_csv(path: Path) -> dict[str, str]:
    sample = path.read_text(encoding="utf-8-sig", errors="replace")[:4096]
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=",;\t|").delimiter
    except csv.Error:
        delimiter = ","  # one-column or irregular files: let the column check below explain
    table = _parse_csv(path, delimiter)
    columns = {str(c).strip().lower(): c for c in table.columns}
    name_col = next((columns[c] for c in NAME_COLUMNS if c in columns), None)
    label_col = next((columns[c] for c in LABEL_COLUMNS if c in columns), None)
    if name_col is None or label_col is None:
        raise DataError(
            f"label file {path}: cannot find the sample-name and label columns in header {list(table.columns)}; "
            f"expected a name column ({', '.join(NAME_COLUMNS)}) and a label column ({', '.join(LABEL_COLUMNS)})"
        )
    names = table[name_col].str.strip()
    duplicated = names[names.duplicated()]
    if not duplicated.empty:
        raise DataError(f"label file {path}: sample name {duplicated.iloc[0]!r} appears more than once")
    if (names == "").any():
        row = int(np.flatnonzero((names == "").to_numpy())[0]) + 2  # +1 header, +1 one-based
        raise DataError(f"label file {path}: empty sample name on line {row}")
    return dict(zip(names.tolist(), table[label_col].str.strip().tolist(), strict=True))


def _parse_csv(path: Path, delimiter: str) -> pd.DataFrame:
    """The CSV as a table of strings; an unreadable file is a DataError naming it, not pandas' own error."""
    import pandas as pd  # here, not at the top: every trial worker imports this module, few read a CSV

    try:
        return pd.read_csv(path, sep=delimiter, dtype=str, keep_default_na=False, encoding="utf-8-sig", engine="c")
    except UnicodeDecodeError as err:
        raise DataError(
            f"label file {path}: not UTF-8 text (byte {err.object[err.start]:#04x} at offset {err.start}); "
            "save it as UTF-8 (data.features.labels)"
        ) from None
    except pd.errors.EmptyDataError:
        raise DataError(f"label file {path} is empty; expected a header (name,label) and a row per sample") from None
    except ValueError as err:  # pandas' ParserError: ragged rows, an unclosed quote
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DataError(f"label file {path}: not a readable CSV ({first}); expected name,label rows") from None


def _read_npz(path: Path, label_split: str) -> dict[str, str]:
    try:
        with np.load(path, allow_pickle=True) as archive:
            if label_split not in archive.files:
                raise DataError(
                    f"label file {path} has no entry {label_split!r} (data.features.label_split); "
                    f"available: {', '.join(archive.files)}"
                )
            corpus = archive[label_split]
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read label file {path}: {err}") from None
    corpus = corpus.item() if corpus.dtype == object and corpus.shape == () else corpus
    if not isinstance(corpus, dict):
        raise DataError(f"label file {path}: entry {label_split!r} is not a name -> {{'emo': ...}} dict")
    out = {}
    for name, info in corpus.items():
        emo = info.get("emo") if isinstance(info, dict) else None
        if emo is None:
            raise DataError(f"label file {path}: entry {label_split!r}[{name!r}] has no 'emo' field")
        out[str(name).strip()] = str(emo).strip()
    return out

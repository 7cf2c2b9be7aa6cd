"""The data types of a dataset: how a pandas DataFrame becomes bytes and back.

The names are those of the Azure ML Python client (`DataTypeIds.GenericCSV`, ...), plus
Parquet. Each type has a file suffix (the data object of a dataset version is `data.<suffix>`)
and a serializer pair:

- `GenericCSV` / `GenericTSV`: a header line, then one line per row, comma / tab separated,
  no index column; `GenericCSVNoHeader` / `GenericTSVNoHeader`: the same without the header,
  read back with columns numbered 0..n-1.
- `PlainText`: one column of strings, one line per row; read back as column 0.
- `Parquet`: columns, types and index as pyarrow stores them.

Invariants: `serialize` either returns the complete bytes or raises `InvalidRequest` (saying
what cannot be written in that type) before anything is stored; an unknown type is an
`InvalidRequest` naming the known ones. pandas (and pyarrow for Parquet) are imported only
when a DataFrame is involved: raw bytes need neither.
"""

from __future__ import annotations

import io
from typing import Any

from dsmount.errors import InvalidRequest


class DataTypeIds:
    """The data type ids a dataset can have (Azure ML's names, plus Parquet)."""

    PlainText = "PlainText"
    GenericCSV = "GenericCSV"
    GenericTSV = "GenericTSV"
    GenericCSVNoHeader = "GenericCSVNoHeader"
    GenericTSVNoHeader = "GenericTSVNoHeader"
    Parquet = "Parquet"


# type -> (suffix of the data object, separator or None, header line?)
_TYPES: dict[str, tuple[str, str | None, bool]] = {
    DataTypeIds.PlainText: ("txt", None, False),
    DataTypeIds.GenericCSV: ("csv", ",", True),
    DataTypeIds.GenericTSV: ("tsv", "\t", True),
    DataTypeIds.GenericCSVNoHeader: ("csv", ",", False),
    DataTypeIds.GenericTSVNoHeader: ("tsv", "\t", False),
    DataTypeIds.Parquet: ("parquet", None, True),
}
KNOWN_TYPES = tuple(_TYPES)
_NO_PYARROW = "Parquet needs pyarrow: pip install 'dsmount[dataframe]' ({})"


def check_type(data_type_id: object) -> str:
    """`data_type_id` if it is a known type, else InvalidRequest naming the known ones."""
    if not isinstance(data_type_id, str) or data_type_id not in _TYPES:
        raise InvalidRequest(
            f"unknown data type {data_type_id!r}: use one of {', '.join(KNOWN_TYPES)} "
            "(dsmount.api.DataTypeIds)"
        )
    return data_type_id


def file_name(data_type_id: str) -> str:
    """The name of a version's data object: `data.<suffix>`."""
    return f"data.{_TYPES[check_type(data_type_id)][0]}"


def _pandas() -> Any:
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(
            "datasets as DataFrames need pandas (and pyarrow for Parquet): "
            "pip install 'dsmount[dataframe]'"
        ) from None
    return pd


def _check_frame(frame: Any, data_type_id: str) -> None:
    pd = _pandas()
    if not isinstance(frame, pd.DataFrame):
        raise InvalidRequest(f"expected a pandas DataFrame, got {type(frame).__name__}")
    _, sep, header = _TYPES[data_type_id]
    if data_type_id == DataTypeIds.PlainText:
        if len(frame.columns) != 1:
            raise InvalidRequest(
                f"a PlainText dataset is one column of text; this DataFrame has "
                f"{len(frame.columns)} columns (use GenericCSV or Parquet)"
            )
        for value in frame.iloc[:, 0]:
            if not isinstance(value, str):
                raise InvalidRequest(
                    f"a PlainText dataset holds strings only; found {type(value).__name__} "
                    f"{value!r}"
                )
            if "\n" in value or "\r" in value:
                raise InvalidRequest(
                    f"a PlainText dataset holds one line per row; {value[:40]!r} holds a "
                    "line break (use GenericCSV, which quotes it)"
                )
        return
    if isinstance(frame.columns, pd.MultiIndex):
        raise InvalidRequest(
            f"{data_type_id} cannot hold a DataFrame with multi-level columns: flatten them"
        )
    if header and frame.columns.duplicated().any():
        dup = sorted({str(c) for c in frame.columns[frame.columns.duplicated()]})
        raise InvalidRequest(
            f"{data_type_id} needs distinct column names; repeated: {', '.join(dup)}"
        )
    if sep is not None and header:
        for c in frame.columns:
            if not isinstance(c, str):
                raise InvalidRequest(
                    f"{data_type_id} writes column names as a header line, so they must be "
                    f"strings; column {c!r} is a {type(c).__name__} (rename it, or use "
                    f"{data_type_id}NoHeader)"
                )


def serialize(frame: Any, data_type_id: str) -> bytes:
    """The bytes of `frame` in type `data_type_id` (see the module docstring)."""
    check_type(data_type_id)
    _check_frame(frame, data_type_id)
    _, sep, header = _TYPES[data_type_id]
    if data_type_id == DataTypeIds.PlainText:
        return "".join(f"{v}\n" for v in frame.iloc[:, 0]).encode()
    if data_type_id == DataTypeIds.Parquet:
        out = io.BytesIO()
        try:
            frame.to_parquet(out)
        except ImportError as e:
            raise ImportError(_NO_PYARROW.format(e)) from None
        except (ValueError, TypeError) as e:  # pyarrow's ArrowInvalid is a ValueError
            raise InvalidRequest(f"this DataFrame cannot be written as Parquet: {e}") from None
        return out.getvalue()
    text = frame.to_csv(sep=sep, header=header, index=False, lineterminator="\n")
    return str(text).encode()


def deserialize(stream: Any, data_type_id: str) -> Any:
    """A DataFrame from a binary stream holding data of type `data_type_id`."""
    pd = _pandas()
    check_type(data_type_id)
    _, sep, header = _TYPES[data_type_id]
    if data_type_id == DataTypeIds.PlainText:
        lines = stream.read().decode("utf-8-sig").splitlines()
        return pd.DataFrame({0: lines})
    if data_type_id == DataTypeIds.Parquet:
        try:
            return pd.read_parquet(stream)
        except ImportError as e:
            raise ImportError(_NO_PYARROW.format(e)) from None
    return pd.read_csv(stream, sep=sep, header=0 if header else None, encoding="utf-8-sig")

"""Row-compressed sparse matrices in plain numpy, for the re-ranking encodings V.

scipy.sparse would do, but importing it takes 0.1–0.3 s and about 20 MiB (it pulls in parts of
numpy it otherwise never loads) in processes that need nothing else from scipy; these few
operations are all the re-ranking uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from reidcli.metrics.parallel import parallel_map

# Gathered entries per chunk of `mean_of_rows` (a few int64 arrays of 512 KiB each, in each
# of `parallel.THREADS` threads).
ENTRY_BUDGET = 1 << 16


@dataclass(frozen=True)
class SparseRows:
    """An (R, C) sparse matrix held by rows (CSR): row i has the entries
    indptr[i]:indptr[i + 1] of `indices` (ascending columns) and `data`.

    Attributes:
        indptr: (R + 1,) int64 row starts.
        indices: (nnz,) int64 column of each entry.
        data: (nnz,) float32 values.
        num_cols: C.
    """

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray
    num_cols: int

    @property
    def num_rows(self) -> int:
        return len(self.indptr) - 1

    def entry_rows(self) -> np.ndarray:
        """(nnz,) row of each entry."""
        return np.repeat(np.arange(self.num_rows), np.diff(self.indptr))

    def rows(self, start: int, stop: int) -> SparseRows:
        """Rows start:stop (views of the entries)."""
        first, last = self.indptr[start], self.indptr[stop]
        return SparseRows(
            self.indptr[start : stop + 1] - first,
            self.indices[first:last],
            self.data[first:last],
            self.num_cols,
        )

    def transpose(self) -> SparseRows:
        """The (C, R) transpose by rows (this matrix by columns), rows ascending in each."""
        order = np.argsort(self.indices, kind="stable")  # by column; rows stay ascending
        counts = np.bincount(self.indices, minlength=self.num_cols)
        indptr = np.concatenate([[0], np.cumsum(counts)])
        return SparseRows(indptr, self.entry_rows()[order], self.data[order], self.num_rows)

    def mean_of_rows(self, table: np.ndarray) -> SparseRows:
        """Row i of the result is the mean of rows table[i, 0], ..., table[i, k-1].

        Args:
            table: (M, k) row indices.

        Returns:
            The (M, C) means, columns ascending in each row.
        """
        # chunks of result rows keep the gathered entries near ENTRY_BUDGET
        per_row = max(1, table.shape[1] * len(self.indices) // max(1, self.num_rows))
        rows = max(1, ENTRY_BUDGET // per_row)
        parts = parallel_map(
            self._mean_rows, [table[s : s + rows] for s in range(0, len(table), rows)]
        )
        offsets = np.cumsum([0] + [len(c) for _, c, _ in parts])[:-1]  # entries before a part
        ptrs = [ptr[1:] + o for (ptr, _, _), o in zip(parts, offsets, strict=True)]
        indptr = np.concatenate([[0], *ptrs])
        cols = np.concatenate([c for _, c, _ in parts])
        return SparseRows(indptr, cols, np.concatenate([v for _, _, v in parts]), self.num_cols)

    def _mean_rows(self, table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(indptr, columns, values) of `mean_of_rows` for a few result rows."""
        num, k = table.shape
        source = table.ravel()  # (M·k,) gathered rows, grouped by result row
        counts = np.diff(self.indptr)[source]
        gathered = np.repeat(self.indptr[source] - np.cumsum(counts) + counts, counts)
        gathered += np.arange(gathered.size)  # (E,) positions of the gathered entries
        target = np.repeat(np.repeat(np.arange(num), k), counts)  # (E,) result row
        # one int64 key per (result row, column); a stable sort keeps each column's terms in
        # table order, so the float32 sums below add them in that order
        key = target * self.num_cols + self.indices[gathered]
        order = np.argsort(key, kind="stable")
        key = key[order]
        values = self.data[gathered[order]] * np.float32(1.0 / k)
        first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
        sums = np.add.reduceat(values, first) if first.size else values[:0]
        rows, cols = np.divmod(key[first], self.num_cols)
        return np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=num))]), cols, sums


def min_sums(a: SparseRows, b_by_col: SparseRows) -> np.ndarray:
    """(R, B) Σ_j min(a[i, j], b[g, j]) over the common supports of a's rows and b's rows.

    Args:
        a: (R, C) rows.
        b_by_col: The (C, B) transpose of b, as `SparseRows.transpose` gives it.

    Returns:
        (R, B) float64 sums.
    """
    num, num_b = a.num_rows, b_by_col.num_cols
    a_row = a.entry_rows()  # (nnz,) row of each entry of a
    col_start = b_by_col.indptr[a.indices]
    counts = b_by_col.indptr[a.indices + 1] - col_start  # b's entries in the same column
    src = np.repeat(np.arange(a.indices.size), counts)
    pos = col_start[src] + np.arange(src.size) - np.repeat(np.cumsum(counts) - counts, counts)
    mins = np.minimum(a.data[src], b_by_col.data[pos])
    flat = a_row[src] * num_b + b_by_col.indices[pos]
    return np.bincount(flat, weights=mins, minlength=num * num_b).reshape(num, num_b)

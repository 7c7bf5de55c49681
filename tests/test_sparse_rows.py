"""The re-ranking's sparse rows (no scipy) against dense numpy."""

import numpy as np
import pytest

import reidcli.metrics.sparse_rows as sparse_rows
from reidcli.metrics.sparse_rows import SparseRows, min_sums


def _random(rng, rows: int, cols: int, density: float) -> tuple[np.ndarray, SparseRows]:
    dense = np.where(rng.random((rows, cols)) < density, rng.random((rows, cols)), 0.0)
    dense = dense.astype(np.float32)
    dense[3] = 0.0  # an empty row
    r, c = np.nonzero(dense)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=rows))])
    return dense, SparseRows(indptr, c, dense[r, c], cols)


def _dense(m: SparseRows) -> np.ndarray:
    out = np.zeros((m.num_rows, m.num_cols), np.float32)
    out[m.entry_rows(), m.indices] = m.data
    return out


@pytest.mark.parametrize("budget", [1 << 19, 50])  # one chunk; many chunks of result rows
def test_mean_of_rows_transpose_rows_and_min_sums(budget, monkeypatch):
    monkeypatch.setattr(sparse_rows, "ENTRY_BUDGET", budget)
    rng = np.random.default_rng(0)
    dense, m = _random(rng, 40, 30, 0.2)
    table = rng.integers(0, 40, (25, 4))
    mean = m.mean_of_rows(table)
    np.testing.assert_allclose(_dense(mean), dense[table].mean(1), rtol=1e-6)
    starts, stops = mean.indptr[:-1], mean.indptr[1:]
    assert all(np.all(np.diff(mean.indices[a:b]) > 0) for a, b in zip(starts, stops, strict=True))
    np.testing.assert_array_equal(_dense(m.transpose()), dense.T)
    np.testing.assert_array_equal(_dense(m.rows(5, 17)), dense[5:17])
    other_dense, other = _random(rng, 12, 30, 0.3)
    expected = np.minimum(dense[:, None, :], other_dense[None, :, :]).sum(-1)  # (40, 12)
    np.testing.assert_allclose(min_sums(m, other.transpose()), expected, rtol=1e-6)

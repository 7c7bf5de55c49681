"""Property tests of the readers of untrusted input: the recipe loader, the `--set` parser, the
dataset CSV reader and the features reader either accept their input or refuse it with a
`ReidError` (one line at the CLI), never with another kind of exception."""

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reidcli.data.layouts import Scan, parse_csv
from reidcli.errors import DatasetError, FeaturesError, RecipeError
from reidcli.metrics.features import Features, read_npz, validate_features
from reidcli.recipe import Recipe, load_recipe
from reidcli.recipe.loading import validate_recipe


def result_or_error(call, error: type[Exception]):
    """What `call()` returns, or the `error` it raised (which must say what is wrong); any
    other exception propagates and fails the test."""
    try:
        return call()
    except error as err:
        text = str(err)
        assert text.strip() and "Traceback" not in text, text
        return err


SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
KEYS = ["data", "model", "train", "optim", "loss", "eval", "export", "bench", "height", "lr",
        "epochs", "seed", "name", "p", "k", "amp", "rerank", "k1", "weight", "ranks",
        "mean"]  # fmt: skip
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["lmbn_n", "adam", "sgd", "off", "bf16", "auto", "cosine"]),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@SETTINGS
@given(raw=st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=5))
def test_recipe_dicts_validate_or_raise_recipe_error(raw):
    outcome = result_or_error(lambda: validate_recipe(raw), RecipeError)
    assert isinstance(outcome, Recipe | RecipeError)


@SETTINGS
@given(text=st.text(max_size=300))
def test_recipe_text_loads_or_raises_recipe_error(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    outcome = result_or_error(lambda: load_recipe(path), RecipeError)
    assert isinstance(outcome, Recipe | RecipeError)


@SETTINGS
@given(
    key=st.one_of(st.sampled_from(["train.seed", "optim.lr", "data.height", "loss.0.weight",
                                   "eval.rerank.k1", "bench.batch", "model.name"]),
                  st.text(max_size=20)),
    value=st.one_of(st.text(max_size=30), SCALARS.map(repr)),
)  # fmt: skip
def test_set_overrides_apply_or_raise_recipe_error(key, value):
    outcome = result_or_error(lambda: load_recipe(None, [f"{key}={value}"]), RecipeError)
    assert isinstance(outcome, Recipe | RecipeError)


FIELD = st.one_of(
    st.text(max_size=8), st.integers(min_value=-(10**25), max_value=10**25).map(str),
    st.sampled_from(["train", "query", "gallery", "a.jpg", "missing.jpg", "-1", "0"]),
)  # fmt: skip


@SETTINGS
@given(rows=st.lists(st.lists(FIELD, min_size=3, max_size=5), max_size=8),
       header=st.sampled_from(["path,pid,camid,split", "path,pid,camid", "x"]))  # fmt: skip
def test_csv_datasets_parse_or_raise_dataset_error(tmp_path, rows, header):
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8")
    text = header + "\n" + "\n".join(",".join(row) for row in rows)
    (tmp_path / "list.csv").write_text(text, encoding="utf-8", errors="surrogatepass")
    outcome = result_or_error(lambda: parse_csv(tmp_path / "list.csv"), DatasetError)
    assert isinstance(outcome, Scan | DatasetError)


@SETTINGS
@given(data=st.binary(max_size=400))
def test_csv_bytes_parse_or_raise_dataset_error(tmp_path, data):
    (tmp_path / "list.csv").write_bytes(data)
    outcome = result_or_error(lambda: parse_csv(tmp_path / "list.csv"), DatasetError)
    assert isinstance(outcome, Scan | DatasetError)


DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int8, np.uint64,
                          np.bool_, np.complex64, "U3", object])  # fmt: skip


def _array(dtype, shape: tuple, fill) -> np.ndarray:
    if dtype is object:
        return np.array([None] * int(np.prod(shape)), dtype=object).reshape(shape)
    with np.errstate(all="ignore"):  # nan or inf cast to integers: whatever numpy makes of it
        return np.full(shape, fill).astype(dtype)


ARRAY = st.builds(
    _array,
    DTYPES,
    st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple),
    st.one_of(st.integers(-5, 5), st.floats(allow_nan=True, allow_infinity=True)),
)
FEATURE_KEYS = ["query_features", "gallery_features", "query_pids", "gallery_pids",
                "query_camids", "gallery_camids", "query_paths", "gallery_paths"]  # fmt: skip


@SETTINGS
@given(arrays=st.dictionaries(st.sampled_from(FEATURE_KEYS), ARRAY, max_size=8))
def test_feature_arrays_validate_or_raise_features_error(arrays):
    outcome = result_or_error(lambda: validate_features(arrays), FeaturesError)
    assert isinstance(outcome, Features | FeaturesError)


@SETTINGS
@given(data=st.binary(max_size=300), zipped=st.booleans())
def test_feature_files_read_or_raise_features_error(tmp_path, data, zipped):
    path = tmp_path / "f.npz"
    if zipped:  # a zip archive whose member is not a valid .npy array
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("query_features.npy", data)
        data = buffer.getvalue()
    path.write_bytes(data)
    outcome = result_or_error(lambda: validate_features(read_npz(path), str(path)), FeaturesError)
    assert isinstance(outcome, Features | FeaturesError)


@pytest.mark.parametrize("name", ["nothing.npz", "folder"])
def test_missing_or_folder_features_file(tmp_path, name):
    (tmp_path / "folder").mkdir()
    with pytest.raises(FeaturesError, match=r"not found|is a folder"):
        read_npz(Path(tmp_path / name))

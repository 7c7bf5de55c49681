"""Recipe schema, loading, overrides and error messages."""

import json
from pathlib import Path

import pytest

from reidcli.errors import RecipeError
from reidcli.recipe import Recipe, load_eval, load_recipe
from reidcli.recipe.loss import parse_loss_string
from reidcli.recipe.model import MODELS

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_committed_recipes_validate(path):
    recipe = load_recipe(path)
    assert recipe.version == 1


def test_expected_recipes_exist():
    names = {p.stem for p in RECIPES}
    assert {"lmbn_n", "lmbn_r", "bot_r50", "osnet_x1_0", "pcb", "mgn", "quickstart"} <= names


def test_lmbn_n_matches_reference_recipe():
    r = load_recipe(RECIPES[0].parent / "lmbn_n.yaml")
    assert (r.data.p, r.data.k, r.data.height, r.data.width) == (6, 8, 384, 128)
    assert r.train.epochs == 130 and r.optim.name == "adam" and r.optim.lr == 6e-4
    assert r.optim.weight_decay == 5e-4
    assert [(t.name, t.weight) for t in r.loss] == [
        ("cross_entropy", 0.5),
        ("multi_similarity", 0.5),
    ]
    assert r.loss[1].margin == 0.7 and r.loss[0].label_smoothing == 0.1
    assert r.data.augment.erasing.p == 0.5 and r.data.augment.erasing.area == (0.02, 0.4)
    assert r.schedule.name == "warmup_cosine" and r.schedule.warmup_epochs == 10


def test_override_parses_yaml_values(tmp_path):
    path = RECIPES[0].parent / "lmbn_n.yaml"
    r = load_recipe(path, ["optim.lr=3e-4", "train.amp=bf16", "loss.1.margin=0.5"])
    assert r.optim.lr == 3e-4 and r.train.amp == "bf16" and r.loss[1].margin == 0.5
    assert r.to_dict()["optim"]["lr"] == 0.0003


def test_amp_off_unquoted_reads_as_off(tmp_path):
    # YAML 1.1 reads an unquoted `off` as false; the precision is still "off", not an error.
    path = write(tmp_path, "train:\n  amp: off\neval:\n  amp: bf16\n")
    assert load_recipe(path).train.amp == "off"
    assert load_recipe(path, ["eval.amp=off"]).eval.amp == "off"
    with pytest.raises(RecipeError, match=r"train\.amp"):
        load_recipe(path, ["train.amp=on"])  # true is not a precision


def test_override_precedence_over_yaml_and_defaults(tmp_path):
    path = write(tmp_path, "train:\n  epochs: 70\n")
    assert load_recipe(path).train.epochs == 70
    assert load_recipe(path, ["train.epochs=90"]).train.epochs == 90
    assert load_recipe(path).train.seed == Recipe().train.seed


def test_lightmbn_loss_string_is_rewritten(tmp_path):
    path = write(tmp_path, 'loss: "0.5*CrossEntropy+0.5*MSLoss"\n')
    r = load_recipe(path)
    assert [(t.name, t.weight) for t in r.loss] == [
        ("cross_entropy", 0.5),
        ("multi_similarity", 0.5),
    ]
    assert parse_loss_string("Triplet") == [{"name": "triplet", "weight": 1.0}]


def test_unknown_loss_term_is_an_error(tmp_path):
    path = write(tmp_path, 'loss: "0.5*CrossEntropy+0.5*GroupLoss"\n')
    with pytest.raises(RecipeError, match=r"loss: unknown loss term 'GroupLoss'"):
        load_recipe(path)


def test_bad_value_names_file_field_and_line(tmp_path):
    path = write(
        tmp_path,
        "loss:\n  - {name: cross_entropy}\n  - {name: triplet_semihard, margin: 0}\n",
    )
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert f"{path}: loss.1.margin: Input should be greater than 0 (line 3)" in str(err.value)


def test_unknown_key_suggests(tmp_path):
    path = write(tmp_path, "optim:\n  name: adam\n  lrr: 0.1\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    assert "optim.lrr: unknown key; did you mean 'lr'?" in str(err.value)
    assert "(line 3)" in str(err.value)


def test_unknown_section_suggests(tmp_path):
    path = write(tmp_path, "trian:\n  epochs: 3\n")
    with pytest.raises(RecipeError, match="did you mean 'train'"):
        load_recipe(path)


def test_wrong_type(tmp_path):
    path = write(tmp_path, "train:\n  epochs: many\n")
    with pytest.raises(RecipeError, match=r"train.epochs: Input should be a valid integer"):
        load_recipe(path)


def test_malformed_yaml(tmp_path):
    path = write(tmp_path, "train:\n  epochs: [1, 2\n")
    with pytest.raises(RecipeError, match=r"malformed YAML \(line \d+\)"):
        load_recipe(path)


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="recipe file not found"):
        load_recipe(tmp_path / "nope.yaml")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(RecipeError, match="is a directory"):
        load_recipe(tmp_path)


def test_not_a_mapping(tmp_path):
    with pytest.raises(RecipeError, match="must be a mapping"):
        load_recipe(write(tmp_path, "- 1\n- 2\n"))


def test_override_errors(tmp_path):
    path = write(tmp_path, "")
    with pytest.raises(RecipeError, match="expected KEY=VALUE"):
        load_recipe(path, ["optim.lr"])
    with pytest.raises(RecipeError, match=r"train.epochs: .*\(from --set\)"):
        load_recipe(path, ["train.epochs=0"])
    with pytest.raises(RecipeError, match="no such list in the recipe"):
        load_recipe(path, ["loss.5.weight=1"])
    listed = write(tmp_path, "loss:\n  - {name: cross_entropy}\n")
    with pytest.raises(RecipeError, match="no such list item"):
        load_recipe(listed, ["loss.5.weight=1"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.p=1", "loss=[{name: triplet}]"], "data.p must be >= 2"),
        (["data.k=1"], "data.k: Input should be greater than or equal to 2"),
        (["data.height=0"], "data.height: Input should be greater than 0"),
        (["train.epochs=5", "schedule.warmup_epochs=5"], "must be smaller than train.epochs"),
        (["loss=[{name: triplet}, {name: triplet}]"], "appear more than once: triplet"),
        (["model.name=lmbn_x"], "model.name: Input should be"),
        (["data.augment.erasing.area=[0.5, 0.1]"], "area must satisfy"),
        (["version=2"], "version: Input should be 1"),
        (["eval.ranks=[0]"], "ranks must be between 1 and 50"),
        (
            ["schedule={name: warmup_multistep, milestones: [200]}", "train.epochs=100"],
            "milestones must be below",
        ),
    ],
)
def test_cross_field_checks(tmp_path, overrides, message):
    with pytest.raises(RecipeError, match=message.replace("(", r"\(")):
        load_recipe(write(tmp_path, ""), overrides)


def test_model_names_list_matches_schema():
    schema = Recipe.model_json_schema()
    names = schema["$defs"]["Model"]["properties"]["name"]["enum"]
    assert tuple(names) == MODELS


def test_committed_json_schema_is_current():
    committed = json.loads((RECIPES[0].parent / "schema.json").read_text())
    assert committed == Recipe.model_json_schema(by_alias=True), "run `make schema`"


def test_recipe_is_frozen():
    r = Recipe()
    with pytest.raises(Exception, match="frozen"):
        r.train.epochs = 3  # type: ignore[misc]


def test_rerank_lambda_alias(tmp_path):
    r = load_recipe(write(tmp_path, "eval:\n  rerank: {enabled: true, lambda: 0.5}\n"))
    assert r.eval.rerank.lambda_ == 0.5
    assert r.to_dict()["eval"]["rerank"]["lambda"] == 0.5


def test_load_eval_is_the_recipes_eval_section(tmp_path):
    # without a file: the schema's eval section with the overrides, validated alone
    overrides = ["eval.rerank.k1=7", "eval.distance=euclidean"]
    assert load_eval(None, overrides) == load_recipe(None, overrides).eval
    assert load_eval(None) == Recipe().eval
    # with a file: the file's eval section, the file validated whole
    path = write(tmp_path, "eval:\n  rerank: {k2: 3}\n")
    assert load_eval(path, ["eval.rerank.k1=7"]).rerank.model_dump() == {
        "enabled": False, "k1": 7, "k2": 3, "lambda_": 0.3,
    }  # fmt: skip
    with pytest.raises(RecipeError, match=r"train.epochs: Input should be greater than 0"):
        load_eval(write(tmp_path, "train: {epochs: 0}\n"))


def test_load_eval_errors_name_the_full_key():
    with pytest.raises(RecipeError, match=r"eval.rerank.kk: unknown key .*valid keys: enabled"):
        load_eval(None, ["eval.rerank.kk=3"])
    with pytest.raises(RecipeError, match=r"eval.rerank.k1: .*greater than or equal to 1 \(from"):
        load_eval(None, ["eval.rerank.k1=0"])
    with pytest.raises(RecipeError, match=r"eval.distanc: unknown key; did you mean 'distance'"):
        load_eval(None, ["eval.distanc=cosine"])
    # features are scored with the eval section only: another section's key does nothing there
    with pytest.raises(RecipeError, match=r"'data.root=x': features are scored with the eval"):
        load_eval(None, ["eval.distance=cosine", "data.root=x"])

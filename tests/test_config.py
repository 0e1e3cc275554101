"""The config schema: every shipped option validates; bad values fail before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from pipeline.config.paths import CONF_DIR, PROJECT_ROOT
from pipeline.config.schema import Config, validate
from pipeline.errors import ConfigError

GROUP_OPTIONS = {
    group: sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
    for group in ("data", "model", "optimizer", "train", "split", "tracking")
}
EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize(
    ("group", "option"),
    [(g, o) for g, options in GROUP_OPTIONS.items() for o in options],
)
def test_every_group_option_validates(compose_cfg, group: str, option: str) -> None:
    extra = ["data.path=some.csv"] if (group, option) == ("data", "csv") else []
    config = validate(compose_cfg(f"{group}={option}", *extra))
    assert isinstance(config, Config)
    if group == "optimizer":
        assert config.optimizer.name == option


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_validates(compose_cfg, experiment: str) -> None:
    config = validate(compose_cfg(f"experiment={experiment}"))
    assert config.tags["preset"] == experiment


def test_rustnet_rf_preset_matches_run2(compose_cfg) -> None:
    config = validate(compose_cfg("experiment=rustnet_rf"))
    assert config.data.seed == 42 and config.split.seed == 7
    assert config.model.hidden_sizes == [12] and config.model.init == "uniform"
    assert (config.optimizer.name, config.optimizer.lr) == ("sgd", 0.003)
    assert config.train.epochs == 3000 and config.train.batch_size is None
    assert (config.train.clip, config.train.clip_value) == ("value", 1.0)


def test_rustnet_csv_preset_points_at_the_diabetes_csv(compose_cfg) -> None:
    config = validate(compose_cfg("experiment=rustnet_csv"))
    assert Path(config.data.path) == PROJECT_ROOT / "data" / "rustnet_diabetes.csv"
    assert config.model.hidden_sizes == [10] and config.optimizer.lr == 0.001
    assert config.train.epochs == 2000


@pytest.mark.parametrize(
    ("override", "key", "fragment"),
    [
        ("optimizer.lr=0", "optimizer.lr", "> 0"),
        ("optimizer.lr=-0.1", "optimizer.lr", "> 0"),
        ("model.hidden_sizes=[8,0]", "model.hidden_sizes[1]", ">= 1"),
        ("train.epochs=0", "train.epochs", ">= 1"),
        ("split.test_fraction=1.0", "split.test_fraction", "(0, 1)"),
        ("split.test_fraction=0", "split.test_fraction", "(0, 1)"),
        ("model.activation=swish", "model.activation", "relu"),
        ("model.init=zeros", "model.init", "uniform"),
        ("train.clip=clamp", "train.clip", "value"),
        ("train.epochs=many", "train.epochs", "many"),
        ("train.batch_size=0", "train.batch_size", ">= 1"),
        ("optimizer.lrr=0.1", "optimizer.lrr", "lrr"),
        ("optimizer.name=adagrad", "optimizer.name", "adam"),
        ("+model.depth=3", "model.depth", "depth"),
        ("split.val_fraction=0.9", "split.val_fraction", "test_fraction + val_fraction < 1"),
        ("split.folds=1", "split.folds", ">= 2"),
        ("split.folds=-3", "split.folds", ">= 2"),
        # what the stages no longer check themselves: the schema is the one place
        ("data.n_samples=1", "data.n_samples", ">= 2"),
        ("data.n_samples=10.5", "data.n_samples", "10.5"),
        ("data.noise_std=-0.1", "data.noise_std", ">= 0"),
        ("data.noise_std=nan", "data.noise_std", ">= 0"),
        ("data.freq_start=inf", "data.freq_end", "finite"),
        ("data.freq_end=-1", "data.freq_end", "> data.freq_start"),
        ("data.seed=-1", "data.seed", "non-negative"),
        ("split.test_fraction=nan", "split.test_fraction", "(0, 1)"),
        ("split.val_fraction=-0.1", "split.val_fraction", "[0, 1)"),
        ("train.threads=0", "train.threads", ">= 1"),
        ("train.clip_value=0", "train.clip_value", "> 0"),
        ("optimizer.weight_decay=-1", "optimizer.weight_decay", ">= 0"),
    ],
)
def test_bad_values_name_the_key(compose_cfg, override: str, key: str, fragment: str) -> None:
    try:
        cfg = compose_cfg(override)
    except ConfigCompositionException as error:  # Hydra itself refuses unknown keys
        message = str(error).splitlines()[0]
    else:
        with pytest.raises(ConfigError) as caught:
            validate(cfg)
        message = str(caught.value)
        assert "\n" not in message
    assert key in message and fragment in message


def test_early_stopping_needs_validation_data(compose_cfg) -> None:
    """Without a validation split (split.val_fraction=0), or with k folds (the refit on all
    the rows outside the test split has nothing to stop on), early stopping is refused
    before any work, in one line that names the fix."""
    with pytest.raises(ConfigError, match=r"^train\.early_stopping_patience: got 5; needs a "
                                          r"validation split: set split\.val_fraction > 0"):
        validate(compose_cfg("train.early_stopping_patience=5", "split.val_fraction=0"))
    with pytest.raises(ConfigError, match=r"^train\.early_stopping_patience: got 5; not with "
                                          r"split\.folds=3 .*split\.folds=null"):
        validate(compose_cfg("train.early_stopping_patience=5", "split.folds=3"))
    assert validate(compose_cfg("train.early_stopping_patience=5")).split.val_fraction == 0.2


def test_folds_leave_val_fraction_unused_and_recorded_as_0(compose_cfg) -> None:
    """With k folds there is no validation split: a val_fraction (the default 0.2 or any
    other valid value) is not used, and the validated config says 0.0, so the run's params
    and config digest describe what it did."""
    from pipeline.config.digest import config_digest

    folded = validate(compose_cfg("split.folds=5"))
    assert (folded.split.folds, folded.split.val_fraction) == (5, 0.0)
    other = validate(compose_cfg("split.folds=5", "split.val_fraction=0.3"))
    assert other.split.val_fraction == 0.0 and config_digest(other) == config_digest(folded)
    with pytest.raises(ConfigError, match=r"split\.val_fraction"):  # still a wrong value
        validate(compose_cfg("split.folds=5", "split.val_fraction=1.5"))


def test_a_config_recorded_before_folds_existed_validates_with_its_digest(compose_cfg) -> None:
    """A stored config without split.folds (recorded before it existed) still validates, as
    no folds, with the config digest it was recorded with (its checkpoint holds it)."""
    from omegaconf import OmegaConf

    from pipeline.config.digest import config_dict, config_digest, tree_digest

    old = OmegaConf.to_container(compose_cfg("split.val_fraction=0"), resolve=False)
    del old["split"]["folds"]
    config = validate(OmegaConf.create(old))
    assert config.split.folds is None
    recorded = config_dict(config)  # the tree as the version before folds recorded it
    del recorded["split"]["folds"]
    assert config_digest(config) == tree_digest(recorded)


def test_rustnet_presets_keep_rustnets_split(compose_cfg) -> None:
    for preset in ("rustnet_rf", "rustnet_csv"):
        config = validate(compose_cfg(f"experiment={preset}"))
        assert config.split.val_fraction == 0.0 and config.split.folds is None
    assert validate(compose_cfg()).split.val_fraction == 0.2


def test_csv_without_path_is_rejected(compose_cfg) -> None:
    with pytest.raises(ConfigError, match=r"data\.path"):
        validate(compose_cfg("data=csv"))


def test_schema_import_does_not_import_mlflow() -> None:
    code = "import sys, pipeline.config.schema, pipeline.__main__; print('mlflow' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=PROJECT_ROOT, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["optimizer.lr=-1"], "optimizer.lr: got -1"),
        (["optimizer=adagrad"], "optimizer=adagrad: no such option"),
        (["train.epochs=abc"], "train.epochs"),
    ],
)
def test_cli_config_error_is_one_line_without_traceback(tmp_path, args, fragment) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", *args, f"tracking.uri=sqlite:///{tmp_path}/m.db",
         f"hydra.run.dir={tmp_path}/out"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120,
    )
    assert done.returncode != 0
    assert fragment in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "m.db").exists()  # failed before the store was touched


# -- typos: the closest valid keys, the setting that fixes it ---------------------------------
@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epoch=100", "unknown key 'train.epoch'; did you mean 'train.epochs'?"),
        ("optimizer.lrr=0.1", "unknown key 'optimizer.lrr'; did you mean 'optimizer.lr'?"),
        ("model.hidden_size=[3]",
         "unknown key 'model.hidden_size'; did you mean 'model.hidden_sizes'?"),
        ("traine.epochs=3", "unknown key 'traine.epochs'; did you mean 'train.epochs'?"),
        ("optimizer.beta=0.9", "unknown key 'optimizer.beta'; did you mean 'optimizer.beta1' "
                               "or 'optimizer.beta2' (with optimizer=adam)?"),
        ("data.path=x.csv", "data.path: a key of data=csv, not of the data chosen: add "
                            "data=csv"),
        ("optimizer=adamm", "optimizer=adamm: no such option; did you mean 'adam'? options: "
                            "adam, momentum, rmsprop, sgd"),
        ("experiment=rustnet", "experiment=rustnet: no such option; did you mean "
                               "'rustnet_rf' or 'rustnet_csv'? options: rustnet_csv, rustnet_rf"),
    ],
)
def test_a_typo_is_answered_with_the_closest_valid_keys(compose_cfg, override: str,
                                                        expected: str) -> None:
    from pipeline.__main__ import compose_error_line

    with pytest.raises(ConfigCompositionException) as caught:
        compose_cfg(override)
    assert compose_error_line(caught.value) == expected


def test_a_free_form_mapping_keeps_hydras_advice(compose_cfg) -> None:
    """tags.<name> is no typo: Hydra's own advice (+tags.team=ml) is the right one."""
    from pipeline.__main__ import compose_error_line

    with pytest.raises(ConfigCompositionException) as caught:
        compose_cfg("tags.team=ml")
    assert "+tags.team=ml" in compose_error_line(caught.value)


def test_an_appended_unknown_key_gets_the_same_answer(compose_cfg) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(compose_cfg("+train.epoch=3"))
    assert str(caught.value) == "unknown key 'train.epoch'; did you mean 'train.epochs'?"


def test_csv_without_path_says_what_to_set(compose_cfg) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(compose_cfg("data=csv"))
    assert "data.path=<file.csv>" in str(caught.value)
    assert "spelling" not in str(caught.value)


def test_help_is_the_projects_and_explains_each_group() -> None:
    done = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True,
                          text=True, cwd=PROJECT_ROOT, timeout=120, check=True)
    lines = done.stdout.splitlines()
    assert lines[0].startswith("mlp-pipeline"), lines[:3]
    assert "powered by Hydra" not in done.stdout and "__main__" not in done.stdout
    assert "optimizer/options" not in done.stdout
    groups = {p.parent.name: sorted(q.stem for q in p.parent.glob("*.yaml"))
              for p in CONF_DIR.glob("*/*.yaml") if p.parent.name != "hydra"}
    for group, options in groups.items():  # each group listed, with its options and a text
        (at,) = [i for i, line in enumerate(lines) if line.lstrip().startswith(f"{group}=")]
        listed, *text = lines[at].split()
        assert listed == f"{group}=" + "|".join(options), lines[at]
        assert len(text or lines[at + 1].split()) > 3, lines[at:at + 2]  # explained


def test_a_key_typo_on_the_command_line_is_one_line(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pipeline", "train.epoch=100", f"hydra.run.dir={tmp_path}/out"],
        capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == "unknown key 'train.epoch'; did you mean 'train.epochs'?"

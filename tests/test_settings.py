"""Every setting in one place: the library's SweepSettings, the default config, the launcher's flags and
the study configs agree, field by field; text forms read as the typed values; bad settings are refused
with the field's name."""

import dataclasses
import glob
import importlib.util
import json
import os

import pytest
from absl import flags

from conftest import ROOT, run_module
from jaxvis import settings as settings_lib
from jaxvis.settings import SettingsError, SweepSettings


def _config(path):
    """A config file's get_config(), loaded as the launcher loads it (by path)."""
    spec = importlib.util.spec_from_file_location(f"config_{os.path.basename(path)[:-3]}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def _default_config():
    return _config(os.path.join(ROOT, "experiments", "configs", "default.py"))


def test_default_config_is_every_setting_at_its_default():
    config = _default_config()
    defaults = SweepSettings()
    assert sorted(config.keys()) == sorted(f.name for f in settings_lib.fields())
    for f in settings_lib.fields():
        assert config[f.name] == getattr(defaults, f.name), f.name
    assert SweepSettings.from_mapping(config) == defaults
    with pytest.raises(AttributeError):  # locked: a misspelt field in a study config is an error
        config.stepz = 3


# ml_collections loads the launcher's default config file with importlib's deprecated load_module.
@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
def test_launcher_flags_are_the_settings_with_their_defaults_and_help():
    from experiments import class_model

    registered = flags.FLAGS
    names = {f.name for f in settings_lib.fields()}
    module_flags = {f.name for f in registered.get_flags_for_module(class_model)}
    # The launcher's flags: one per setting, the config, and the process flags; nothing else.
    assert module_flags == names | {"config"} | set(class_model.PROCESS_FLAGS)
    for f in settings_lib.fields():
        flag = registered[f.name]
        assert f.metadata["help"] in flag.help, f.name
        parsed = SweepSettings.create(**{f.name: flag.default})
        assert getattr(parsed, f.name) == f.default, f.name


def test_study_configs_start_from_the_default_and_read_into_settings():
    paths = sorted(glob.glob(os.path.join(ROOT, "experiments", "configs", "*.py")))
    studies = [p for p in paths if os.path.basename(p) not in ("__init__.py", "default.py")]
    assert studies
    names = {f.name for f in settings_lib.fields()}
    for path in studies:
        config = _config(path)
        assert set(config.keys()) == names, path
        SweepSettings.from_mapping(config)


def test_text_forms_read_as_typed_values():
    s = SweepSettings.create(lrs="0.1,1,10", categories="goose, horse", seeds=["1", "2"], steps="50",
                             snapshots="10,50", clip="true", penalty="sq=0.1,1", init="0")
    assert s.lrs == (0.1, 1.0, 10.0) and s.categories == ("goose", "horse") and s.seeds == (1, 2)
    assert s.steps == 50 and s.snapshots == (10, 50) and s.clip is True and s.penalty == ("sq=0.1,1",)
    assert s.init == (0.0,)
    assert s.replace(lrs=[0.5]).lrs == (0.5,) and s.lrs == (0.1, 1.0, 10.0)  # frozen: replace makes a new one
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 3
    hash(s)  # a hashable value


@pytest.mark.parametrize("changes, message", [
    ({"stepz": 3}, r"unknown setting\(s\) \['stepz'\]; the settings are: model, params"),
    ({"lrs": "0.1,fast"}, r"setting lrs must be numbers; got '0.1,fast'"),
    ({"seeds": "1.5"}, r"setting seeds must be whole numbers"),
    ({"optimizer": "rmsprop"}, r"optimizer must be one of sgd, momentum, adam; got 'rmsprop'"),
    ({"clip": "maybe"}, r"setting clip must be true or false"),
])
def test_bad_settings_are_refused_with_the_field_named(changes, message):
    with pytest.raises(SettingsError, match=message):
        SweepSettings.create(**changes)


def test_helpfull_lists_every_setting_with_its_help():
    out = run_module("experiments.class_model", "--helpfull", check=False).stdout  # absl's help exits 1
    for f in settings_lib.fields():
        assert f"--{f.name}" in out or f"--[no]{f.name}" in out, f.name
        assert f.metadata["help"].split()[0] in out
    assert "--config" in out and "--config.FIELD=value" in out


def test_config_override_and_flag_reach_the_settings(tmp_path):
    """--config.steps and --steps both set the setting; a misspelt override is refused in one line."""
    from jaxvis import assets

    common = ["--params", assets.path("classifier"), "--categories", "star", "--noprogress", "--nopngs"]
    out = tmp_path / "a"
    run_module("experiments.class_model", "--config.steps=2", "--config.lrs=(0.5,)", *common, "--out", str(out))
    config = json.loads((out / "config.json").read_text())
    assert config["steps"] == 2 and config["axes"][1] == ["lr", [0.5]]
    proc = run_module("experiments.class_model", "--config.stepz=2", *common, "--out", str(tmp_path / "b"), check=False)
    assert proc.returncode != 0 and "stepz" in proc.stderr

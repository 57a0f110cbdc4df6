"""Every setting in one place: the library's SweepSettings, the default config, the launcher's flags and
the study configs agree, field by field; text forms read as the typed values; bad settings are refused
with the field's name."""

import dataclasses
import glob
import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, run_module
from jaxvis import assets, fileio
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


_LAUNCHER_FLAGS = """
import json, warnings
warnings.simplefilter("ignore", DeprecationWarning)
from absl import flags
from experiments import class_model
print(json.dumps({"flags": {f.name: [f.default, f.help] for f in flags.FLAGS.get_flags_for_module(class_model)},
                  "process": list(class_model.PROCESS_FLAGS)}, default=str))
"""


def test_launcher_flags_are_the_settings_with_their_defaults_and_help():
    # In a process of its own: the launchers define absl flags globally (--out is defined by several).
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER_FLAGS], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    launcher = found["flags"]
    names = {f.name for f in settings_lib.fields()}
    # The launcher's flags: one per setting, the config, and the process flags; nothing else.
    assert set(launcher) == names | {"config"} | set(found["process"])
    for f in settings_lib.fields():
        default, text = launcher[f.name]
        assert f.metadata["help"] in text, f.name
        parsed = SweepSettings.create(**{f.name: default})
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


def test_parameterisation_transforms_and_decays_reach_the_engine():
    from jaxvis import assets, sweeps
    from jaxvis import parameterizations as par
    from jaxvis import transforms as tfm

    base = dict(params=assets.path("classifier"), categories="star,ring", steps=2)
    _, sweep, eng, run_config = sweeps.build(SweepSettings.create(
        **base, parameterization="fourier+decorrelated+sigmoid", decays="0.5,1.5", transforms="pad(4),jitter(4),rotate(10)"))
    stats = par.load_stats("shapes")
    assert eng.parameterization == par.fourier() + par.decorrelated(stats["colour_sqrt"]) + par.sigmoid()
    assert eng.transforms == (tfm.pad(4), tfm.jitter(4), tfm.rotate(10))
    assert ("decay", [0.5, 1.5]) in sweep.axes() and sweep.size == 4
    assert run_config["transforms"] == ["pad(4)", "jitter(4)", "rotate(10)"]
    _, _, eng, _ = sweeps.build(SweepSettings.create(**base, parameterization="maco+clip", jitter=2))
    np.testing.assert_array_equal(eng.parameterization.basis.spectrum.array, stats["spectrum_64x64"])
    assert eng.transforms == (tfm.jitter(2),)
    # the defaults build today's engine, with today's run identity
    _, sweep, eng, run_config = sweeps.build(SweepSettings.create(**base))
    assert eng.parameterization.identity and eng.transforms == () and "transforms" not in run_config
    assert [name for name, _ in sweep.axes()] == ["target", "lr", "loss", "init", "seed", "boxes"]
    for changes, message in [({"parameterization": "fourier+sigmod"}, "unknown parameterisation part 'sigmod'"),
                             ({"transforms": "jiter(3)"}, "unknown transform 'jiter'"),
                             ({"decays": "1", "parameterization": "pixels+sigmoid"}, "decays sweep the fourier"),
                             ({"loss": "channel:conv9_9"}, "no layer named 'conv9_9'")]:
        with pytest.raises(ValueError, match=message):
            sweeps.build(SweepSettings.create(**base, **changes))


def test_channels_of_two_layers_from_the_command_line_form():
    from jaxvis import assets, sweeps

    _, sweep, eng, _ = sweeps.build(SweepSettings.create(
        params=assets.path("classifier"), categories="3,5", steps=2, loss="channel:conv3_2_pre+0.5*channel:conv5_1_pre[7]"))
    assert eng.term_names == ["channel:conv3_2_pre", "channel:conv5_1_pre[7]"]
    assert [loss.loss for loss in sweep.losses] == [{"channel:conv3_2_pre": 1.0, "channel:conv5_1_pre[7]": 0.5}]
    assert list(sweep.targets) == [3, 5]


@pytest.mark.slow  # the detector recipe through the launcher; the classifier's stays
def test_detector_feature_vis_config_runs_from_the_launcher(tmp_path):
    """The detector recipe's documented command (the robust detector, an image with opacity), shortened to 2
    steps: every class x 2 seeds x 2 boxes, network-input RGB images (reported over grey), targets."""
    out = tmp_path / "fv_ssd"
    run_module("experiments.class_model", "--config", os.path.join(ROOT, "experiments/configs/feature_vis.py")
               + ":shapes_ssd", "--steps", "2", "--snapshots", "", "--noprogress", "--nopngs", "--out", str(out))
    images = np.load(out / "images.npy")
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert images.shape == (24, 128, 128, 3) and len(records) == 24
    assert sorted({r["target"] for r in records}) == list(range(1, 7))  # the detector's class 0 is background
    recorded = json.loads((out / "config.json").read_text())["params_sha256"]
    assert recorded == fileio.sha256(assets.path("detector_robust"))
    lo, hi = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25
    assert images.min() > lo and images.max() < hi


@pytest.mark.slow  # a whole config through the launcher; the override test above stays
@pytest.mark.filterwarnings("ignore:the load_module:DeprecationWarning")
def test_feature_vis_config_runs_from_the_launcher(tmp_path):
    """The documented command (the config names the shipped classifier), shortened to 3 steps: every class x 4
    seeds, network-input images, targets."""
    out = tmp_path / "fv"
    run_module("experiments.class_model", "--config", os.path.join(ROOT, "experiments/configs/feature_vis.py") + ":shapes",
               "--steps", "3", "--snapshots", "", "--noprogress", "--nopngs",
               "--out", str(out))
    images = np.load(out / "images.npy")
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert images.shape == (24, 64, 64, 3) and len(records) == 24
    assert sorted({r["target"] for r in records}) == list(range(6))
    lo, hi = (0 - 0.5) / 0.25, (1 - 0.5) / 0.25  # the shapes models' network-input values of black and white
    assert images.min() > lo and images.max() < hi  # a sigmoid image lies inside the valid range
    for arg in ("shapes_ssd", "shapes_ssd_free", "shapes_ssd_lab", "shapes_ssd_standard", "lab", "maco", "lucid",
                "ssd300"):
        config = importlib.util.spec_from_file_location("fv", os.path.join(ROOT, "experiments/configs/feature_vis.py"))
        module = importlib.util.module_from_spec(config)
        config.loader.exec_module(module)
        SweepSettings.from_mapping(module.get_config(arg))

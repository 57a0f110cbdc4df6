r"""Every setting of a class-model sweep at its default: the config the launcher reads when --config
names no study, and the one every study config starts from.

  python -m experiments.class_model --params vgg16.safetensors --categories goose --out runs/x
  python -m experiments.class_model --config experiments/configs/default.py --config.steps=50 ...

The fields, their defaults and their meaning are those of ``jaxvis.settings.SweepSettings`` (written
once, there); ``python -m experiments.class_model --helpfull`` lists them with their help. A study
config changes only what differs:

  from experiments.configs import default

  def get_config(arg=None):
      c = default.get_config()
      c.categories = ("goose",)
      c.lrs = (0.1, 1.0, 10.0)
      return c

Lists are tuples; an unknown field is an error (the config is locked).
"""

from ml_collections import ConfigDict

from jaxvis.settings import SweepSettings, fields


def get_config(arg: str | None = None) -> ConfigDict:
    defaults = SweepSettings()
    config = ConfigDict({f.name: getattr(defaults, f.name) for f in fields()})
    config.lock()
    return config

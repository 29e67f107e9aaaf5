"""clipcl_runner: a Hydra-configured runner for continual learning of CLIP."""

__version__ = "0.1.0"

# Registers the config schema (conf/config.yaml's first default) wherever the package is used to compose.
from . import config_schema as config_schema  # noqa: E402

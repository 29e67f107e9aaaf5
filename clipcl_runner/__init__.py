"""clipcl_runner: a Hydra-configured runner for continual learning of CLIP."""

__version__ = "0.1.0"

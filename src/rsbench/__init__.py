"""rsbench: benchmark self-supervised pretraining for remote-sensing imagery."""

__version__ = "0.1.0"

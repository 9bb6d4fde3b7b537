"""mlopskit: provision K3s over SSH, build the MLflow image, deploy an authenticated MLflow platform."""

__version__ = "0.1.0"

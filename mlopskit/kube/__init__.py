"""Kubernetes: render the k8s/ templates, validate, seal, apply, wait."""

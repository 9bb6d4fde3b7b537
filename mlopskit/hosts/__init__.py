"""Provisioning over SSH: one module per concern (remote access, prerequisites, NFS, K3s, kubeconfig, images)."""

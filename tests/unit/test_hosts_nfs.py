"""The /etc/exports line for the cluster's NFS export."""

from __future__ import annotations

from collections.abc import Callable

from mlopskit.hosts.nfs import exports_line, merge_exports, nfs_clients
from mlopskit.settings import Settings

OPTIONS = "(rw,sync,no_subtree_check,no_root_squash)"
INVENTORY = """
hosts:
  - {name: s1, address: 10.0.0.1, roles: [server, nfs]}
  - {name: w1, address: 10.0.0.2, roles: [agent]}
"""


def test_exports_line_lists_each_client_with_options() -> None:
    assert exports_line("/srv/nfs/k8s", ["10.0.0.1", "10.0.0.2"]) == f"/srv/nfs/k8s 10.0.0.1{OPTIONS} 10.0.0.2{OPTIONS}"


def test_clients_default_to_every_inventory_host(make_settings: Callable[..., Settings]) -> None:
    assert nfs_clients(make_settings(inventory=INVENTORY)) == ["10.0.0.1", "10.0.0.2"]


def test_configured_cidr_replaces_host_addresses(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(inventory=INVENTORY, platform="platform: {storage: {nfs_clients: [10.0.0.0/24]}}")
    assert nfs_clients(settings) == ["10.0.0.0/24"]


def test_merge_replaces_the_line_for_the_same_path_and_keeps_others() -> None:
    current = "# comment\n/home 10.0.0.0/8(ro)\n/srv/nfs/k8s 10.0.0.9(rw)\n"
    merged = merge_exports(current, "/srv/nfs/k8s 10.0.0.1(rw)")
    assert merged == "# comment\n/home 10.0.0.0/8(ro)\n/srv/nfs/k8s 10.0.0.1(rw)\n"


def test_merge_into_empty_exports_adds_the_line() -> None:
    assert merge_exports("", "/srv 1.2.3.4(rw)") == "/srv 1.2.3.4(rw)\n"


def test_merge_is_stable_when_the_line_is_present() -> None:
    once = merge_exports("/home *(ro)\n", "/srv 1.2.3.4(rw)")
    assert merge_exports(once, "/srv 1.2.3.4(rw)") == once

"""The value rules shared by settings and flags, and the one URL builder."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

import pytest

from mlopskit import formats


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("fd00::10", 6443, "https://[fd00::10]:6443"),
        ("10.0.0.1", 6443, "https://10.0.0.1:6443"),
        ("k3s.example.com", 6443, "https://k3s.example.com:6443"),
        ("::1", None, "https://[::1]"),
    ],
)
def test_url_brackets_ipv6_and_only_ipv6(host: str, port: int | None, expected: str) -> None:
    assert formats.url("https", host, port) == expected


def test_host_port_brackets_ipv6() -> None:
    assert formats.host_port("fd00::10", 22) == "[fd00::10]:22"


@pytest.mark.parametrize(
    ("text", "value"),
    [("500m", Decimal("0.5")), ("1Gi", Decimal(1024**3)), ("10G", Decimal(10**10)), ("1e3", Decimal(1000))],
)
def test_quantities_parse_as_kubernetes_does(text: str, value: Decimal) -> None:
    assert formats.parse_quantity(text) == value


@pytest.mark.parametrize("check", [formats.check_dns_label, formats.check_dns_subdomain, formats.check_label_value])
def test_name_rules_refuse_a_trailing_newline(check: Callable[[str], str]) -> None:
    with pytest.raises(ValueError):
        check("mlops\n")


def test_label_value_is_cut_to_a_valid_label() -> None:
    assert formats.label_value("_" + "a" * 62 + "-b") == "a" * 62


def test_label_value_of_nothing_usable_is_none() -> None:
    assert formats.label_value("__") is None


@pytest.mark.parametrize(
    "image",
    [
        "postgres:15-bookworm",
        "registry.example.com:5000/team/mlflow:3.17.2-abc1234",
        "[fd00::1]:5000/mlflow:1",
        "ghcr.io/a/b@sha256:" + "a" * 64,
    ],
)
def test_image_references_docker_accepts(image: str) -> None:
    assert formats.check_image(image) == image


@pytest.mark.parametrize("image", ["Postgres:15", "mlflow:", "mlflow:-x", "a b:1", "mlflow:1\n"])
def test_image_references_docker_refuses(image: str) -> None:
    with pytest.raises(ValueError, match="must be an image reference"):
        formats.check_image(image)

"""SSH as users have it: the OpenSSH client config under the inventory, resolved before any connection."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fabric import Connection

from mlopskit.errors import PlatformError
from mlopskit.hosts import provision as runs
from mlopskit.hosts.remote import Remote, access_for, agent_key_count, check_key, load_ssh_config
from mlopskit.settings import Host, Settings
from tests.ssh_agent import running_agent
from tests.unit.conftest import private_key_text, public_key_text

MakeSettings = Callable[..., Settings]


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    made = {}
    for name in ("config-key", "inventory-key", "jump-key"):
        made[name] = tmp_path / name
        made[name].write_text(private_key_text())
    return made


def ssh_config(tmp_path: Path, keys: dict[str, Path]) -> Path:
    path = tmp_path / "ssh_config"
    path.write_text(f"""Host jump
    HostName 203.0.113.7
    Port 2222
    User hopper
    IdentityFile {keys["jump-key"]}

Host web1
    HostName 10.0.1.5

Host web1 10.0.1.*
    User deploy
    Port 2200
    IdentityFile {keys["config-key"]}
    IdentityFile ~/.ssh/this-one-does-not-exist
    ConnectTimeout 4
    ProxyJump jump
""")
    return path


def settings_with(make_settings: MakeSettings, config: Path, inventory: str, env_file: str = "") -> Settings:
    return make_settings(inventory=inventory, env_file=f"SSH_CONFIG_PATH={config}\n{env_file}")


HOSTS = """hosts:
  - {name: s1, address: 10.0.1.5, ssh_host: web1, roles: [server]}
  - {name: a1, address: 10.0.1.6, roles: [agent]}
  - {name: a2, address: 10.0.2.7, roles: [agent]}
"""


def host(settings: Settings, name: str) -> Host:
    return next(h for h in settings.cluster.hosts if h.name == name)


def test_an_alias_takes_hostname_user_port_keys_timeout_and_jump_from_the_ssh_config(
    make_settings: MakeSettings, tmp_path: Path, keys: dict[str, Path]
) -> None:
    settings = settings_with(make_settings, ssh_config(tmp_path, keys), HOSTS)
    access = access_for(settings, host(settings, "s1"))
    assert (access.target, access.hostname, access.user, access.port) == ("web1", "10.0.1.5", "deploy", 2200)
    assert access.key_paths == (keys["config-key"],)  # IdentityFile lines naming no file are passed over
    assert (access.connect_timeout, access.jump) == (4, "jump")
    assert access.where == "deploy@10.0.1.5:2200 via jump"


def test_an_address_matches_host_patterns_of_the_ssh_config(
    make_settings: MakeSettings, tmp_path: Path, keys: dict[str, Path]
) -> None:
    settings = settings_with(make_settings, ssh_config(tmp_path, keys), HOSTS)
    assert access_for(settings, host(settings, "a1")).user == "deploy"
    other = access_for(settings, host(settings, "a2"))  # no Host line matches: the defaults
    assert (other.user, other.port, other.jump, other.connect_timeout) == ("root", 22, None, 10)


def test_values_set_in_the_inventory_or_env_win_over_the_ssh_config(
    make_settings: MakeSettings, tmp_path: Path, keys: dict[str, Path]
) -> None:
    inventory = f"ssh: {{user: kit, key_path: {keys['inventory-key']}}}\n" + HOSTS
    settings = settings_with(make_settings, ssh_config(tmp_path, keys), inventory, env_file="SSH_PORT=22\n")
    access = access_for(settings, host(settings, "s1"))
    assert (access.user, access.port, access.key_paths) == ("kit", 22, (keys["inventory-key"],))
    assert (access.hostname, access.jump) == ("10.0.1.5", "jump")  # what the inventory does not say still comes


def test_a_hosts_own_entry_wins_over_everything(
    make_settings: MakeSettings, tmp_path: Path, keys: dict[str, Path]
) -> None:
    inventory = HOSTS.replace("ssh_host: web1,", "ssh_host: web1, user: admin, port: 2022,")
    settings = settings_with(make_settings, ssh_config(tmp_path, keys), f"ssh: {{user: kit}}\n{inventory}")
    access = access_for(settings, host(settings, "s1"))
    assert (access.user, access.port) == ("admin", 2022)


def test_the_connection_jumps_through_the_bastion_with_its_own_key(
    make_settings: MakeSettings, tmp_path: Path, keys: dict[str, Path]
) -> None:
    settings = settings_with(make_settings, ssh_config(tmp_path, keys), HOSTS)
    remote = Remote(host(settings, "s1"), access_for(settings, host(settings, "s1")))
    connection = remote.connection
    assert (connection.host, connection.user, connection.port) == ("10.0.1.5", "deploy", 2200)
    assert connection.connect_kwargs["key_filename"] == [str(keys["config-key"])]
    gateway = connection.gateway
    assert isinstance(gateway, Connection)
    assert (gateway.host, gateway.user, gateway.port) == ("203.0.113.7", "hopper", 2222)
    assert gateway.connect_kwargs["key_filename"] == [str(keys["jump-key"])]
    assert gateway.connect_kwargs["allow_agent"] is False


def test_a_missing_ssh_config_named_in_settings_is_refused_naming_the_setting(
    make_settings: MakeSettings, tmp_path: Path
) -> None:
    settings = settings_with(make_settings, tmp_path / "nope", HOSTS)
    with pytest.raises(PlatformError) as caught:
        load_ssh_config(settings)
    assert str(caught.value) == (
        f"SSH config {tmp_path / 'nope'} cannot be read (No such file or directory); fix the file or point "
        "cluster.ssh.config_path (SSH_CONFIG_PATH) [from .env:1] at another one"
    )


def test_an_unparsable_ssh_config_is_refused_naming_the_file(make_settings: MakeSettings, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host web1\n    HostName\n")
    with pytest.raises(PlatformError, match=rf"SSH config {config}: Unparsable line"):
        load_ssh_config(settings_with(make_settings, config, HOSTS))


def test_identity_files_that_all_miss_are_refused_before_any_host(make_settings: MakeSettings, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host 10.0.1.*\n    IdentityFile /nope/id_ed25519\n")
    settings = settings_with(make_settings, config, HOSTS)
    with pytest.raises(PlatformError) as caught:
        check_key(settings, host(settings, "a1"), access_for(settings, host(settings, "a1")))
    assert str(caught.value).startswith(
        f"a1: SSH key /nope/id_ed25519 cannot be read (No such file or directory); fix IdentityFile for Host 10.0.1.6 "
        f"in {config}"
    )


def test_a_public_key_as_identity_file_is_refused(make_settings: MakeSettings, tmp_path: Path) -> None:
    public = tmp_path / "id.pub"
    public.write_text(public_key_text())
    config = tmp_path / "ssh_config"
    config.write_text(f"Host *\n    IdentityFile {public}\n")
    settings = settings_with(make_settings, config, HOSTS)
    with pytest.raises(
        PlatformError, match=r"s1: SSH key .*id\.pub is a public key; fix IdentityFile for Host web1 in "
    ):
        runs.validate(settings)


def test_without_settings_the_users_own_ssh_config_files_are_read(
    make_settings: MakeSettings, tmp_path: Path, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh/config").write_text(f"Host 10.0.2.7\n    User fromhome\n    IdentityFile {keys['config-key']}\n")
    monkeypatch.setenv("HOME", str(home))
    settings = make_settings(inventory=HOSTS)
    assert access_for(settings, host(settings, "a2")).user == "fromhome"


def test_a_port_that_is_not_a_number_is_refused_naming_the_file(make_settings: MakeSettings, tmp_path: Path) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("Host 10.0.1.*\n    Port twenty-two\n")
    settings = settings_with(make_settings, config, HOSTS)
    with pytest.raises(PlatformError, match=rf"a1: the SSH config \({config}\) gives port 'twenty-two' for 10.0.1.6"):
        access_for(settings, host(settings, "a1"))


def no_config(tmp_path: Path, **environ: str) -> dict[str, str]:
    """The environment with an empty SSH config, so the machine's own ~/.ssh/config stays out."""
    empty = tmp_path / "empty_ssh_config"
    empty.write_text("")
    return {"SSH_CONFIG_PATH": str(empty), **environ}


def test_a_running_ssh_agent_is_counted_and_none_is_zero(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "agent-key"
    key.write_text(private_key_text())
    key.chmod(0o600)
    assert agent_key_count() == 0
    with running_agent(key) as socket:
        monkeypatch.setenv("SSH_AUTH_SOCK", socket)
        assert agent_key_count() == 1


def test_a_missing_key_file_is_passed_over_when_the_agent_offers_keys(
    make_settings: MakeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "agent-key"
    key.write_text(private_key_text())
    key.chmod(0o600)
    settings = make_settings(inventory=HOSTS, environ=no_config(tmp_path, SSH_KEY_PATH=str(tmp_path / "not-here")))
    with running_agent(key) as socket:
        monkeypatch.setenv("SSH_AUTH_SOCK", socket)
        access = access_for(settings, host(settings, "a1"))
        check_key(settings, host(settings, "a1"), access)  # no error: the agent's key is offered instead
        remote = Remote(host(settings, "a1"), access)
    assert (access.agent_keys, access.key_files) == (1, [])
    assert remote.connection.connect_kwargs["allow_agent"] is True
    assert "and the ssh-agent's 1 key(s)" in access.credentials


def test_with_use_agent_false_a_missing_key_file_is_refused_even_with_an_agent(
    make_settings: MakeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = tmp_path / "agent-key"
    key.write_text(private_key_text())
    key.chmod(0o600)
    settings = make_settings(
        inventory=HOSTS, environ=no_config(tmp_path, SSH_KEY_PATH=str(tmp_path / "not-here"), SSH_USE_AGENT="false")
    )
    with running_agent(key) as socket, pytest.raises(PlatformError, match="use_agent is false") as caught:
        monkeypatch.setenv("SSH_AUTH_SOCK", socket)
        check_key(settings, host(settings, "a1"), access_for(settings, host(settings, "a1")))
    assert "not-here cannot be read" in str(caught.value)


def test_a_public_key_file_is_refused_even_with_an_agent(
    make_settings: MakeSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key, public = tmp_path / "agent-key", tmp_path / "id.pub"
    key.write_text(private_key_text())
    key.chmod(0o600)
    public.write_text(public_key_text())
    settings = make_settings(inventory=HOSTS, environ=no_config(tmp_path, SSH_KEY_PATH=str(public)))
    with running_agent(key) as socket, pytest.raises(PlatformError, match="is a public key"):
        monkeypatch.setenv("SSH_AUTH_SOCK", socket)
        check_key(settings, host(settings, "a1"), access_for(settings, host(settings, "a1")))

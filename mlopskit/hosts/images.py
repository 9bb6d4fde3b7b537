"""Image delivery without a registry: a `docker save` stream piped into `k3s ctr images import` on a node."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from fabric import Connection

from mlopskit import console
from mlopskit.errors import PlatformError
from mlopskit.hosts.provision import validate
from mlopskit.hosts.remote import connect, tail
from mlopskit.settings import Settings

IMPORT_COMMAND = "k3s ctr images import -"


def import_images(connection: Connection, chunks: Iterable[bytes], sudo_password: str | None = None) -> None:
    """Stream a tarball over the SSH channel's stdin chunk by chunk; the whole tarball is never in memory."""
    connection.open()
    transport = connection.client.get_transport()
    if transport is None:
        raise PlatformError(f"{connection.host}: SSH connection closed before the image import")
    channel = transport.open_session()
    if connection.user == "root":
        channel.exec_command(IMPORT_COMMAND)
    elif sudo_password:
        # sudo reads the password line from stdin, then hands the rest of stdin to ctr.
        channel.exec_command(f"sudo -S -p '' {IMPORT_COMMAND}")
        channel.sendall((sudo_password + "\n").encode())
    else:
        channel.exec_command(f"sudo -n {IMPORT_COMMAND}")
    try:
        for chunk in chunks:
            channel.sendall(chunk)
    except OSError:
        pass  # the remote side ended early; its exit status and output say why
    channel.shutdown_write()
    output = channel.makefile("rb").read().decode(errors="replace")
    errors = channel.makefile_stderr("rb").read().decode(errors="replace")
    status = channel.recv_exit_status()
    channel.close()
    if status != 0:
        raise PlatformError(
            f"{connection.host}: `{IMPORT_COMMAND}` failed (exit {status}); check sudo and that K3s runs there\n"
            + tail(output + errors)
        )


def images_to_deliver(settings: Settings, mlflow_image: str, present: Callable[[str], bool]) -> list[str]:
    """The images the rendered manifests name; PlatformError before anything is sent when one is missing here."""
    from mlopskit.kube.deploy import rendered_objects
    from mlopskit.kube.render import manifest_images

    wanted = manifest_images(rendered_objects(settings, mlflow_image))
    missing = [name for name in wanted if not present(name)]
    if missing:
        raise PlatformError(
            f"the manifests name {', '.join(missing)}, which the local Docker engine does not have, so the nodes "
            "could not run them. Pull or build them here first; on a machine without a registry set "
            "IMAGE_SOURCE=offline (images.source in config/platform.yaml) so the manifests name the offline "
            "stand-ins that `invoke build-images` builds."
        )
    return wanted


def import_to_nodes(settings: Settings, stream: Callable[[], Iterable[bytes]]) -> list[str]:
    """Import a fresh image stream into every node, one node at a time; returns the node names."""
    validate(settings)
    done = []
    for host in settings.cluster.hosts:
        remote = connect(settings, host)
        try:
            remote.run("true")  # connects, so an unreachable host or a refused key gets its readable error
            console.step(f"{host.name}: importing images into containerd")
            import_images(remote.connection, stream(), remote.access.sudo_password)
        finally:
            remote.close()
        done.append(host.name)
    return done

"""The Invoke collection: every user-facing command, assembled from one module per concern."""

from __future__ import annotations

from invoke.collection import Collection

from mlopskit import console
from mlopskit.tasks import access, config, deploy, provision, secrets
from mlopskit.tasks import backup as backup_tasks
from mlopskit.tasks import images as image_tasks
from mlopskit.tasks import local as local_tasks
from mlopskit.tasks import render as render_tasks


def build_collection() -> Collection:
    console.quiet_on_closed_output()
    ns = Collection()
    ns.add_task(config.show_config, name="config")
    ns.add_task(config.doctor)
    ns.add_task(config.init)
    ns.add_task(render_tasks.render)
    ns.add_task(deploy.deploy)
    ns.add_task(deploy.diff)
    ns.add_task(deploy.destroy)
    ns.add_task(provision.provision)
    ns.add_task(provision.upgrade)
    ns.add_task(provision.reset)
    ns.add_task(image_tasks.build_images, name="build-images")
    ns.add_task(local_tasks.up)
    ns.add_task(local_tasks.down)
    ns.add_task(local_tasks.status)
    ns.add_task(secrets.seal)
    ns.add_task(backup_tasks.backup)
    ns.add_task(backup_tasks.restore)
    ns.add_task(backup_tasks.backup_keygen, name="backup-keygen")
    ns.add_collection(Collection("secrets", secrets.backup_key))
    ns.add_collection(Collection("access", access.plan, access.apply))
    return ns

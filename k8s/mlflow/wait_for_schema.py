"""Wait until the tracking and auth databases are at the schema head of this image, then exit 0.

Runs as the MLflow server's initContainer: the migration Job upgrades the schemas once; the server's
replicas wait here instead of racing to migrate. Exits 1 with the reason after SCHEMA_WAIT_SECONDS.
"""

import os
import sys
import time

import sqlalchemy
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from mlflow.server.auth.db.utils import _get_alembic_config as auth_config
from mlflow.store.db.utils import _get_alembic_config as tracking_config

deadline = time.monotonic() + int(os.environ.get("SCHEMA_WAIT_SECONDS", "900"))
job = os.environ.get("MIGRATION_JOB", "the migration Job")
checks = [
    ("tracking", os.environ["MLFLOW_BACKEND_STORE_URI"], tracking_config, "alembic_version"),
    ("auth", os.environ["MLFLOW_AUTH_DATABASE_URI"], auth_config, "alembic_version_auth"),
]
for name, url, config, table in checks:
    head = ScriptDirectory.from_config(config(url)).get_current_head()
    while True:
        try:
            engine = sqlalchemy.create_engine(url)
            with engine.connect() as conn:
                current = MigrationContext.configure(conn, opts={"version_table": table}).get_current_revision()
            engine.dispose()
        except Exception as exc:  # the database may not accept connections yet
            current = f"unreachable ({type(exc).__name__})"
        if current == head:
            print(f"wait-for-schema: {name} database is at {head}", flush=True)
            break
        if time.monotonic() > deadline:
            sys.exit(f"wait-for-schema: {name} database is at {current}, expected {head}; check the logs of {job}")
        print(f"wait-for-schema: {name} database is at {current}, waiting for {head} ({job})", flush=True)
        time.sleep(5)

"""Values that used to pass `invoke config` and fail later (a traceback, a half-done `up` or `deploy`): S3
regions, CronJob schedules, PostgreSQL names, worker and replica counts, whole numbers, and the wording of
type errors. Each kind is checked for every field of that kind, from every door (.env, environment, YAML)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from botocore.exceptions import InvalidRegionError
from botocore.utils import validate_region_name

from mlopskit import cron, formats
from mlopskit.settings import MAX_MLFLOW_WORKERS, Settings

from .conftest import refused

MakeSettings = Callable[..., Settings]


# ---------------------------------------------------------------------------------------------- regions


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-3", "ap-southeast-2", "local", "garage", "a", "x" * 63])
def test_region_names_botocore_takes_are_accepted(region: str) -> None:
    assert formats.check_s3_region(region) == region


@pytest.mark.parametrize("region", ["not a region!", "-us", "us-", "123", "x" * 64, "us_east_1", "us.east"])
def test_region_names_botocore_refuses_are_refused(region: str) -> None:
    with pytest.raises(InvalidRegionError):
        validate_region_name(region)  # the rule mirrored is botocore's own: the client would fail on it
    with pytest.raises(ValueError, match="must be an S3 region name such as us-east-1"):
        formats.check_s3_region(region)


def test_empty_region_is_refused_since_aws_builds_no_endpoint_from_it() -> None:
    with pytest.raises(ValueError, match="S3 region name"):
        formats.check_s3_region("")


def test_s3_region_from_env_file_names_key_variable_and_line(make_settings: MakeSettings) -> None:
    text = refused(make_settings, env_file='S3_ENDPOINT=http://s3:8333\nS3_REGION="not a region!"\n')
    assert "platform.object_store.region (S3_REGION) [from .env:2]: must be an S3 region name" in text
    assert "(got 'not a region!')" in text


def test_s3_region_from_environment_is_checked(make_settings: MakeSettings) -> None:
    text = refused(make_settings, environ={"S3_REGION": "bad region"})
    assert "platform.object_store.region (S3_REGION) [from environment $S3_REGION]" in text


def test_backup_destination_region_is_checked(make_settings: MakeSettings) -> None:
    text = refused(make_settings, platform="platform:\n  backup:\n    destination:\n      region: 'x y'\n")
    assert "platform.backup.destination.region [from config/platform.yaml:4]: must be an S3 region name" in text


def test_valid_regions_load(make_settings: MakeSettings) -> None:
    settings = make_settings(
        platform="platform:\n  backup:\n    destination:\n      region: eu-central-1\n",
        env_file="S3_REGION=eu-west-3\n",
    )
    assert settings.platform.object_store.region == "eu-west-3"
    assert settings.platform.backup.destination.region == "eu-central-1"


# --------------------------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(
    "schedule",
    [
        "0 3 * * *",
        "*/15 * * * *",
        "0 0-23/2 1,15 * *",
        "5/10 * * * *",  # a/step: a through the maximum
        "0 9 * JAN-DEC MON-FRI",
        "0 9 * jan,Jul sun",  # names case-insensitive
        "59 23 31 12 6",
        "0 0 1 1 0",
        "? ? ? ? ?",
        "*/61 * * * *",  # a step beyond the range keeps the first value; the API server takes it
        "0  3 * * *",  # fields split on any run of spaces, as strings.Fields does
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
        "@every 6h",
        "@every 1h30m",
        "@every 90s",
        "@every 1.5h",
    ],
)
def test_schedules_kubernetes_accepts_are_accepted(schedule: str) -> None:
    assert cron.check_schedule(schedule) == schedule


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("61 25 * * *", "minute field '61': 61 is above the maximum 59"),
        ("0 24 * * *", "hour field '24': 24 is above the maximum 23"),
        ("0 0 0 * *", "day of month field '0': 0 is below the minimum 1"),
        ("0 0 32 * *", "day of month field '32': 32 is above the maximum 31"),
        ("0 0 * 13 *", "month field '13': 13 is above the maximum 12"),
        ("0 0 * * 7", "day of week field '7': 7 is above the maximum 6; allowed: 0-6 or SUN-SAT"),
        ("a b c d e", "minute field 'a': 'a' is not a number"),
        ("0 0 * FOO *", "month field 'FOO': 'FOO' is not a number; allowed: 1-12 or JAN-DEC"),
        ("0 0 * * MONDAY", "day of week field 'MONDAY'"),
        ("0 0 JAN * *", "day of month field 'JAN'"),  # names only in month and day of week
        ("10-5 * * * *", "the range starts (10) after it ends (5)"),
        ("*/0 * * * *", "the step after '/' must be a whole number above 0"),
        ("1/x * * * *", "the step after '/' must be a whole number above 0"),
        ("1,,2 * * * *", "empty item"),
        ("0 3 * *", "five fields"),
        ("0 3 * * * *", "found 6 field(s)"),
        ("L 3 * * *", "minute field 'L'"),
        ("0 3 L * *", "day of month field 'L'"),
        ("0 3 * * 5#3", "day of week field '5#3'"),
        ("@Daily", "unknown descriptor"),
        ("@reboot", "unknown descriptor"),
        ("@every", "unknown descriptor"),
        ("@every 5", "@every needs a duration"),
        ("@every 0s", "@every needs a duration above zero"),
        ("CRON_TZ=UTC 0 3 * * *", "must not set a time zone"),
        ("TZ=Europe/Paris 0 3 * * *", "must not set a time zone"),
        ("", "five fields"),
    ],
)
def test_schedules_kubernetes_refuses_are_refused(schedule: str, message: str) -> None:
    with pytest.raises(ValueError) as exc_info:
        cron.check_schedule(schedule)
    assert message in str(exc_info.value)


@pytest.mark.parametrize("section", ["gc", "backup"])
def test_every_schedule_setting_is_checked_with_its_source(make_settings: MakeSettings, section: str) -> None:
    text = refused(make_settings, platform=f"platform:\n  {section}:\n    schedule: '61 25 * * *'\n")
    assert f"platform.{section}.schedule [from config/platform.yaml:3]: minute field '61'" in text


# ------------------------------------------------------------------------------------- PostgreSQL names


@pytest.mark.parametrize("name", ["mlflow", "mlflow_auth", "_private", "db2", "a", "x" * 63, "postgres"])
def test_postgres_names_usable_unquoted_are_accepted(name: str) -> None:
    assert formats.check_postgres_name(name) == name


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("Bad User", "lowercase letters, digits and '_'"),
        ("my db", "lowercase letters, digits and '_'"),
        ("MLflow", "lowercase letters"),
        ("2fast", "not starting with a digit"),
        ("my-db", "lowercase letters, digits and '_'"),
        ("x" * 64, "at most 63 characters"),
        ("", "lowercase letters"),
        ("pg_admin", "PostgreSQL reserves them"),
        ("template1", "PostgreSQL reserves them"),
    ],
)
def test_postgres_names_needing_quotes_or_reserved_are_refused(name: str, message: str) -> None:
    with pytest.raises(ValueError) as exc_info:
        formats.check_postgres_name(name)
    assert message in str(exc_info.value)


@pytest.mark.parametrize(("key", "value"), [("user", "Bad User"), ("tracking_db", "my db"), ("auth_db", "Auth")])
def test_every_postgres_name_setting_is_checked(make_settings: MakeSettings, key: str, value: str) -> None:
    text = refused(make_settings, platform=f"platform:\n  postgres:\n    {key}: '{value}'\n")
    assert f"platform.postgres.{key} [from config/platform.yaml:3]: must be a PostgreSQL name" in text


def test_default_postgres_names_pass(make_settings: MakeSettings) -> None:
    pg = make_settings().platform.postgres
    assert (pg.user, pg.tracking_db, pg.auth_db) == ("mlflow", "mlflow", "mlflow_auth")


# ------------------------------------------------------------------------------------ counts and bounds


def test_mlflow_workers_above_the_maximum_is_refused_with_the_reason(make_settings: MakeSettings) -> None:
    text = refused(make_settings, env_file="MLFLOW_WORKERS=100000\n")
    assert (
        f"platform.mlflow.workers (MLFLOW_WORKERS) [from .env:1]: must be at most {MAX_MLFLOW_WORKERS}; "
        "each worker is a full Python process" in text
    )


@pytest.mark.parametrize("workers", ["1", str(MAX_MLFLOW_WORKERS)])
def test_mlflow_workers_within_bounds_load(make_settings: MakeSettings, workers: str) -> None:
    assert make_settings(env_file=f"MLFLOW_WORKERS={workers}\n").platform.mlflow.workers == int(workers)


@pytest.mark.parametrize(
    "yaml_text",
    [
        "platform:\n  mlflow:\n    replicas: 2147483648\n",
        "platform:\n  mlflow:\n    autoscaling: {min_replicas: 2, max_replicas: 2147483648}\n",
        "platform:\n  ingress:\n    upload_timeout_seconds: 2147483648\n",
    ],
)
def test_kubernetes_int32_fields_refuse_what_the_api_server_would(make_settings: MakeSettings, yaml_text: str) -> None:
    assert "must be at most 2147483647" in refused(make_settings, platform=yaml_text)


def test_high_replica_counts_stay_allowed(make_settings: MakeSettings) -> None:
    settings = make_settings(platform="platform:\n  mlflow:\n    replicas: 200\n")
    assert settings.platform.mlflow.replicas == 200


# ---------------------------------------------------------------------------------------- whole numbers


@pytest.mark.parametrize(
    ("yaml_value", "shown"), [("true", "(got true)"), ("2.0", "(got 2.0)"), ("'2.5'", "(got '2.5')")]
)
def test_whole_number_fields_refuse_booleans_and_fractions(
    make_settings: MakeSettings, yaml_value: str, shown: str
) -> None:
    text = refused(make_settings, platform=f"platform:\n  mlflow:\n    replicas: {yaml_value}\n")
    assert "platform.mlflow.replicas [from config/platform.yaml:3]: must be a whole number in digits" in text
    assert shown in text


@pytest.mark.parametrize("raw", ["5000.0", "abc", "5e3", "true"])
def test_whole_number_from_env_file_must_be_digits(make_settings: MakeSettings, raw: str) -> None:
    text = refused(make_settings, env_file=f"LOCAL_PORT={raw}\n")
    assert "local.port (LOCAL_PORT) [from .env:1]: must be a whole number in digits, such as 5" in text
    assert f"(got '{raw}')" in text


def test_digit_strings_from_env_and_environment_still_load(make_settings: MakeSettings) -> None:
    settings = make_settings(env_file="LOCAL_PORT=5001\n", environ={"SSH_PORT": "2222"})
    assert settings.local.port == 5001
    assert settings.cluster.ssh.port == 2222


def test_bounds_read_as_words_not_pydantic_text(make_settings: MakeSettings) -> None:
    text = refused(make_settings, env_file="LOCAL_PORT=70000\n")
    assert "local.port (LOCAL_PORT) [from .env:1]: must be at most 65535 (got '70000')" in text
    assert "Input should" not in text


# ------------------------------------------------------------------------------------------ type wording


def test_yaml_date_where_text_is_needed_suggests_quotes(make_settings: MakeSettings) -> None:
    text = refused(make_settings, platform="platform:\n  namespace: 2024-01-01\n")
    assert (
        "platform.namespace (PLATFORM_NAMESPACE) [from config/platform.yaml:2]: must be a name such as mlops; "
        'YAML reads this value as a date: put it in quotes, e.g. "2024-01-01" (got 2024-01-01)'
    ) in text
    assert "datetime" not in text


def test_yaml_number_for_a_quantity_says_a_quantity_is_expected(make_settings: MakeSettings) -> None:
    text = refused(make_settings, platform="platform:\n  storage:\n    postgres_size: 0\n")
    assert "platform.storage.postgres_size [from config/platform.yaml:3]: must be a quantity such as 10Gi" in text
    assert "YAML reads this value as a number: put it in quotes" in text


def test_yaml_boolean_label_value_suggests_quotes(make_settings: MakeSettings) -> None:
    inventory = "hosts:\n  - {name: s1, address: 10.0.0.1, roles: [server], labels: {gpu: true}}\n"
    text = refused(make_settings, inventory=inventory)
    assert "cluster.hosts[s1].labels.gpu [from config/inventory.yaml:2]: must be text; " in text
    assert 'YAML reads this value as true/false (a boolean): put it in quotes, e.g. "true"' in text


def test_quoted_yaml_values_load(make_settings: MakeSettings) -> None:
    settings = make_settings(
        platform="platform:\n  storage:\n    postgres_size: '20Gi'\n",
        inventory="hosts:\n  - {name: s1, address: 10.0.0.1, roles: [server], labels: {gpu: 'true'}}\n",
    )
    assert settings.platform.storage.postgres_size == "20Gi"
    assert settings.cluster.hosts[0].labels == {"gpu": "true"}


def test_boolean_errors_say_true_or_false(make_settings: MakeSettings) -> None:
    text = refused(make_settings, env_file="INGRESS_ENABLED=maybe\n")
    assert "platform.ingress.enabled (INGRESS_ENABLED) [from .env:1]: must be true or false (got 'maybe')" in text

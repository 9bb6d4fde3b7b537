"""CronJob schedules checked the way the Kubernetes API server checks them, so a bad one is named at load time
instead of stopping a deploy after the workloads were applied.

Kubernetes (pkg/apis/batch/validation, validateScheduleFormat) parses spec.schedule with robfig/cron v3's
`cron.ParseStandard` and refuses any schedule containing "TZ" (a `TZ=`/`CRON_TZ=` prefix; spec.timeZone
replaces it). ParseStandard (robfig/cron v3 parser.go) takes either a descriptor (@yearly, @annually,
@monthly, @weekly, @daily, @midnight, @hourly, or `@every <Go duration>`) or exactly five whitespace-separated
fields: minute 0-59, hour 0-23, day of month 1-31, month 1-12 or JAN-DEC, day of week 0-6 or SUN-SAT (names
case-insensitive). A field is a comma list of ranges; a range is `*`, `?`, `a` or `a-b`, optionally followed
by `/step` (step above 0; `a/step` runs from a to the field's maximum); a range must not start below the
minimum, end above the maximum, or start after its end.

No well-kept Python library implements exactly this grammar (croniter also takes L, W, #, H and day 7), so
this small parser mirrors robfig/cron's. It is a little stricter where robfig is lenient by accident: it
refuses empty list items ("1,,2"), signs ("+5") and text after `*` ("*-5"), which no schedule means.
"""

from __future__ import annotations

import re

DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (name, minimum, maximum, names) of the five fields, in order.
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {name: number for number, name in enumerate(_MONTHS, start=1)}),
    ("day of week", 0, 6, {name: number for number, name in enumerate(_DAYS)}),
)
# Go's time.ParseDuration: one or more decimal numbers with a unit each, e.g. 1h30m, 90s, 1.5h.
_GO_DURATION = re.compile(r"(?:(?:\d+\.?\d*|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+")
EXAMPLE = "'0 3 * * *' (03:00 UTC daily)"


def check_schedule(value: str) -> str:
    """Return value if the Kubernetes API server would take it as a CronJob's spec.schedule.

    Raises ValueError naming the part that is wrong and what is expected there."""
    if "TZ" in value:
        raise ValueError(
            "must not set a time zone (TZ= or CRON_TZ=): Kubernetes refuses it in a schedule, and this "
            "platform's CronJobs run in UTC; convert the time to UTC"
        )
    if value.startswith("@"):
        _check_descriptor(value)
        return value
    fields = value.split()
    if len(fields) != len(_FIELDS):
        raise ValueError(
            f"must be a cron schedule of five fields (minute hour day-of-month month day-of-week), such as "
            f"{EXAMPLE}, or one of {', '.join(DESCRIPTORS)} or '@every 6h'; found {len(fields)} field(s)"
        )
    for text, (name, low, high, names) in zip(fields, _FIELDS, strict=True):
        for item in text.split(","):
            _check_range(item, name, low, high, names)
    return value


def _check_descriptor(value: str) -> None:
    if value in DESCRIPTORS:
        return
    if value.startswith("@every "):
        duration = value.removeprefix("@every ")
        if _GO_DURATION.fullmatch(duration) and any(ch in "123456789" for ch in duration):
            return
        raise ValueError(f"@every needs a duration above zero such as 30m, 6h or 1h30m (got {duration!r})")
    raise ValueError(
        f"unknown descriptor; use one of {', '.join(DESCRIPTORS)} or '@every 6h' (descriptors are lowercase)"
    )


def _check_range(item: str, name: str, low: int, high: int, names: dict[str, int]) -> None:
    allowed = f"{low}-{high}" + (f" or {_name_span(names)}" if names else "")
    if not item:
        raise ValueError(f"{name} field has an empty item (two commas in a row, or a comma at an end)")
    span, slash, step = item.partition("/")
    if slash and not (step.isascii() and step.isdigit() and int(step) > 0):
        raise ValueError(f"{name} field {item!r}: the step after '/' must be a whole number above 0")
    if span in ("*", "?"):
        return
    first, dash, last = span.partition("-")
    start = _value(first, item, name, allowed, names)
    end = _value(last, item, name, allowed, names) if dash else (high if slash else start)
    if start < low:
        raise ValueError(f"{name} field {item!r}: {start} is below the minimum {low}; allowed: {allowed}")
    if end > high:
        raise ValueError(f"{name} field {item!r}: {end} is above the maximum {high}; allowed: {allowed}")
    if start > end:
        raise ValueError(f"{name} field {item!r}: the range starts ({start}) after it ends ({end})")


def _value(text: str, item: str, name: str, allowed: str, names: dict[str, int]) -> int:
    if text.lower() in names:
        return names[text.lower()]
    if text.isascii() and text.isdigit():
        return int(text)
    raise ValueError(f"{name} field {item!r}: {text!r} is not a number; allowed: {allowed}, '*', ranges a-b, steps /n")


def _name_span(names: dict[str, int]) -> str:
    ordered = sorted(names, key=names.__getitem__)
    return f"{ordered[0].upper()}-{ordered[-1].upper()}"

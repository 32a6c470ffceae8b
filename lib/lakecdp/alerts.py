"""Alerts: ``lakecdp alerts`` reads the ops tables (delta-rs, no Spark), finds causes worth a
person's attention and sends each once, to a Slack-compatible webhook and/or by email (SMTP).

Kinds (``conf/alerts.yaml`` ``rules``; a kind left out is off):

* ``run_failed``: an ``ops.runs`` step with status ``failed``;
* ``slow_step``: a succeeded step slower than ``factor`` x the median of the same step's
  earlier successful runs (at least ``min_history`` of them);
* ``segment_held``: ``segments.approvals`` rows with status ``held`` (drift guard);
* ``quarantine_rate``: an ``ops.ingest_audit`` row (a file, or a stream batch) with at least
  ``min_rows`` read and ``rows_quarantined / rows_read`` above ``threshold``;
* ``identity_merge_spike``: an identity run whose ``merge`` count in ``identity.id_changes`` is at
  least ``min_merges`` and above ``factor`` x the median of earlier runs (``min_history`` of them);
* ``dead_letters``: rows in ``activation.dead_letter``, one alert per (destination, run).

"Once per cause": every alert has a cause id (e.g. ``run_failed:<run>:<step>``); a cause sent to
a channel is recorded in ``ops.alerts`` (cause, channel) and never sent there again. A channel
that fails is not recorded, so the next check retries it (and only it).

The pipeline runner calls :func:`after_run` when a run ends (succeeded or failed), so a run
checks its own outcome; ``lakecdp alerts`` does the same from a scheduler or by hand.

Example:
    >>> sent = check_and_send(project, load_alerts_config(project.conf_dir))
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import smtplib
import statistics
import sys
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from lakecdp import catalog
from lakecdp.config import ConfigError, Project, StrictModel, load_model
from lakecdp.tables import Tables

logger = logging.getLogger(__name__)

LEDGER = catalog.ALERTS.name


# -- configuration --------------------------------------------------------------------
class WebhookChannel(StrictModel):
    type: Literal["webhook"]
    #: the URL is a secret (Slack webhook URLs are): named by environment variable
    url_env: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    timeout_seconds: float = Field(default=10, gt=0)


class EmailChannel(StrictModel):
    type: Literal["email"]
    host: str = "127.0.0.1"
    port: int = Field(default=25, gt=0, le=65535)
    sender: str
    to: list[str] = Field(min_length=1)
    starttls: bool = False
    username_env: str | None = None
    password_env: str | None = None


class _Rule(StrictModel):
    channels: list[str] = Field(min_length=1)


class RunFailed(_Rule):
    pass


class SlowStep(_Rule):
    factor: float = Field(default=3.0, gt=1)
    min_history: int = Field(default=3, ge=1)


class SegmentHeld(_Rule):
    pass


class QuarantineRate(_Rule):
    threshold: float = Field(default=0.05, gt=0, lt=1)
    min_rows: int = Field(default=100, ge=1)


class MergeSpike(_Rule):
    factor: float = Field(default=3.0, gt=1)
    min_history: int = Field(default=3, ge=1)
    min_merges: int = Field(default=10, ge=1)


class DeadLetters(_Rule):
    pass


class Rules(StrictModel):
    run_failed: RunFailed | None = None
    slow_step: SlowStep | None = None
    segment_held: SegmentHeld | None = None
    quarantine_rate: QuarantineRate | None = None
    identity_merge_spike: MergeSpike | None = None
    dead_letters: DeadLetters | None = None


class AlertsConfig(StrictModel):
    """``conf/alerts.yaml``."""

    version: Literal[1]
    channels: dict[str, WebhookChannel | EmailChannel] = Field(default_factory=dict)
    rules: Rules = Field(default_factory=Rules)

    @model_validator(mode="after")
    def _known_channels(self) -> AlertsConfig:
        for kind, rule in self.rules:
            for channel in rule.channels if rule else []:
                if channel not in self.channels:
                    raise ValueError(
                        f"rules.{kind}.channels: unknown channel {channel!r}; known: {sorted(self.channels)}"
                    )
        return self


def load_alerts_config(conf_dir: str | os.PathLike[str]) -> AlertsConfig:
    return load_model(Path(conf_dir) / "alerts.yaml", AlertsConfig)


# -- finding causes ---------------------------------------------------------------------
@dataclass(frozen=True)
class Alert:
    kind: str
    cause: str
    title: str
    detail: str
    #: what to run or read to see more
    see: str

    def text(self) -> str:
        return f"[lakecdp] {self.title}\n{self.detail}\nSee: {self.see}"


class _Reader:
    def __init__(self, project: Project) -> None:
        self.tables = Tables(project)

    def rows(self, name: str, columns: list[str]) -> list[dict[str, Any]]:
        from deltalake import DeltaTable

        from lakecdp.delta_store import arrow_table

        path = Path(self.tables.location(name))
        if not (path / "_delta_log").is_dir():
            return []
        table = DeltaTable(str(path))
        present = set(table.schema().to_arrow().names) if hasattr(table.schema(), "to_arrow") else None
        wanted = [c for c in columns if present is None or c in present]
        return arrow_table(table, columns=wanted).to_pylist()


def _median_before(history: list[tuple[Any, float]], at: Any) -> tuple[int, float | None]:
    earlier = [v for when, v in history if when < at]
    return len(earlier), (statistics.median(earlier) if earlier else None)


def find_alerts(project: Project, rules: Rules) -> list[Alert]:
    """Every current cause of the configured kinds (sent or not)."""
    read = _Reader(project)
    alerts: list[Alert] = []
    if rules.run_failed or rules.slow_step:
        runs = read.rows(catalog.RUNS.name, ["run_id", "job", "step", "status", "started_at", "duration_s", "message"])
        if rules.run_failed:
            for r in runs:
                if r["status"] == "failed":
                    alerts.append(
                        Alert(
                            "run_failed",
                            f"run_failed:{r['run_id']}:{r['step']}",
                            f"{r['job']} run {r['run_id']}: step {r['step']} failed",
                            (r["message"] or "")[:500],
                            f"lakecdp run (resumes run {r['run_id']} at {r['step']}); ops.runs where run_id = '{r['run_id']}'",
                        )
                    )
        if rules.slow_step:
            done = [r for r in runs if r["status"] == "succeeded" and r["duration_s"] is not None]
            for r in done:
                history = [(o["started_at"], o["duration_s"]) for o in done if o["step"] == r["step"]]
                count, median = _median_before(history, r["started_at"])
                if (
                    count >= rules.slow_step.min_history
                    and median
                    and r["duration_s"] > rules.slow_step.factor * median
                ):
                    alerts.append(
                        Alert(
                            "slow_step",
                            f"slow_step:{r['run_id']}:{r['step']}",
                            f"step {r['step']} of run {r['run_id']} took {r['duration_s']:.1f} s "
                            f"({r['duration_s'] / median:.1f}x its median {median:.1f} s)",
                            f"threshold {rules.slow_step.factor:g}x the median of {count} earlier runs",
                            f"ops.runs where step = '{r['step']}' order by started_at",
                        )
                    )
    if rules.segment_held:
        for r in read.rows(
            catalog.APPROVALS.name,
            ["run_id", "segment_id", "status", "previous_size", "new_size", "change_share", "threshold"],
        ):
            if r["status"] == "held":
                alerts.append(
                    Alert(
                        "segment_held",
                        f"segment_held:{r['run_id']}:{r['segment_id']}",
                        f"segment {r['segment_id']} held for approval in run {r['run_id']}",
                        f"size {r.get('previous_size')} -> {r.get('new_size')} (change {r.get('change_share')}, "
                        f"threshold {r.get('threshold')})",
                        f"lakecdp segments approve --segment {r['segment_id']} --run {r['run_id']}",
                    )
                )
    if rules.quarantine_rate:
        rule = rules.quarantine_rate
        for r in read.rows(
            catalog.INGEST_AUDIT.name,
            ["run_id", "source", "source_file", "rows_read", "rows_quarantined", "stream_batch"],
        ):
            read_rows, quarantined = r["rows_read"] or 0, r["rows_quarantined"] or 0
            if read_rows >= rule.min_rows and quarantined / read_rows > rule.threshold:
                where = r.get("stream_batch") or r["run_id"]
                alerts.append(
                    Alert(
                        "quarantine_rate",
                        f"quarantine_rate:{r['source']}:{r['source_file']}:{where}",
                        f"{r['source']}: {quarantined / read_rows:.1%} of {read_rows} rows quarantined ({r['source_file']})",
                        f"threshold {rule.threshold:.1%}; run {r['run_id']}",
                        f"quarantine.{r['source']} where run_id = '{r['run_id']}' (reasons, detail); ops.data_quality",
                    )
                )
    if rules.identity_merge_spike:
        spike = rules.identity_merge_spike
        changes = read.rows(catalog.ID_CHANGES.name, ["run_id", "change_type", "changed_at"])
        per_run: dict[str, tuple[Any, int]] = {}
        for c in changes:
            at, merges = per_run.get(c["run_id"], (c["changed_at"], 0))
            per_run[c["run_id"]] = (min(at, c["changed_at"]), merges + (c["change_type"] == "merge"))
        history = [(at, float(m)) for at, m in per_run.values()]
        for run_id, (at, merges) in per_run.items():
            count, median = _median_before(history, at)
            if (
                count >= spike.min_history
                and merges >= spike.min_merges
                and merges > spike.factor * max(median or 0, 1)
            ):
                alerts.append(
                    Alert(
                        "identity_merge_spike",
                        f"identity_merge_spike:{run_id}",
                        f"identity run {run_id} merged {merges} customers ({merges / max(median or 0, 1):.1f}x the median "
                        f"{median:g} of {count} earlier runs)",
                        "a bad link merges two people and everything downstream follows",
                        f"identity.id_changes where run_id = '{run_id}' and change_type = 'merge'; "
                        "lakecdp identity-charts",
                    )
                )
    if rules.dead_letters:
        groups: dict[tuple[str, str], int] = {}
        for r in read.rows(catalog.DEAD_LETTER.name, ["destination", "run_id"]):
            groups[(r["destination"], r["run_id"])] = groups.get((r["destination"], r["run_id"]), 0) + 1
        for (destination, run_id), count in sorted(groups.items()):
            alerts.append(
                Alert(
                    "dead_letters",
                    f"dead_letters:{destination}:{run_id}",
                    f"{count} deliveries to {destination} dead-lettered in run {run_id}",
                    "they were retried and gave up; they are not delivered until re-driven",
                    f"activation.dead_letter where destination = '{destination}' and run_id = '{run_id}'",
                )
            )
    return alerts


# -- sending ------------------------------------------------------------------------------
def _send_webhook(channel: WebhookChannel, alert: Alert) -> None:
    url = os.environ.get(channel.url_env)
    if not url:
        raise ConfigError(f"conf/alerts.yaml: environment variable {channel.url_env} (webhook URL) is not set")
    body = json.dumps({"text": alert.text(), "lakecdp": {"kind": alert.kind, "cause": alert.cause}}).encode()
    request = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=channel.timeout_seconds) as response:
        if response.status >= 300:
            raise OSError(f"webhook answered {response.status}")


def _send_email(channel: EmailChannel, alert: Alert) -> None:
    message = EmailMessage()
    message["From"], message["To"] = channel.sender, ", ".join(channel.to)
    message["Subject"] = f"[lakecdp] {alert.title}"
    message.set_content(alert.text())
    with smtplib.SMTP(channel.host, channel.port, timeout=30) as smtp:
        if channel.starttls:
            smtp.starttls()
        if channel.username_env:
            smtp.login(os.environ.get(channel.username_env, ""), os.environ.get(channel.password_env or "", ""))
        smtp.send_message(message)


def _sent(project: Project) -> set[tuple[str, str]]:
    rows = _Reader(project).rows(LEDGER, ["cause", "channel"])
    return {(r["cause"], r["channel"]) for r in rows}


def _record(project: Project, entries: list[tuple[Alert, str]]) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake

    now = datetime.now(timezone.utc)
    table = pa.table(
        {
            "cause": [a.cause for a, _ in entries],
            "kind": [a.kind for a, _ in entries],
            "channel": [c for _, c in entries],
            "title": [a.title for a, _ in entries],
            "sent_at": pa.array([now] * len(entries), pa.timestamp("us", tz="UTC")),
        }
    )
    write_deltalake(Tables(project).location(LEDGER), table, mode="append")


def check_and_send(project: Project, config: AlertsConfig) -> list[tuple[Alert, str]]:
    """Send every cause not sent to its channels yet; returns what was sent (alert, channel)."""
    sent = _sent(project)
    delivered: list[tuple[Alert, str]] = []
    failures = 0
    for alert in find_alerts(project, config.rules):
        rule = getattr(config.rules, alert.kind)
        for name in rule.channels:
            if (alert.cause, name) in sent:
                continue
            channel = config.channels[name]
            try:
                if isinstance(channel, WebhookChannel):
                    _send_webhook(channel, alert)
                else:
                    _send_email(channel, alert)
            except (OSError, smtplib.SMTPException, ConfigError) as exc:
                failures += 1
                logger.error("alert %s to %s failed (retried next check): %s", alert.cause, name, exc)
                continue
            delivered.append((alert, name))
            sent.add((alert.cause, name))
    if delivered:
        _record(project, delivered)
    logger.info("alerts: %d sent, %d failed", len(delivered), failures)
    return delivered


def after_run(project: Project) -> list[tuple[Alert, str]]:
    """The pipeline run's own check (``lakecdp.pipeline.run_pipeline`` calls it when a run ends).

    Never raises: an alert that cannot be sent must not fail (or mask the failure of) the run
    it reports on; it is logged and retried at the next check. A project without
    ``conf/alerts.yaml`` has alerts off.
    """
    if not (project.conf_dir / "alerts.yaml").is_file():
        return []
    try:
        return check_and_send(project, load_alerts_config(project.conf_dir))
    except Exception:  # noqa: BLE001 -- reported, never raised into the run
        logger.exception("alerts: the check after the run failed (run `lakecdp alerts` to retry)")
        return []


# -- CLI ---------------------------------------------------------------------------------
def _check(args: argparse.Namespace) -> int:
    from lakecdp.config import load_project

    project = load_project(args.conf, env=args.env)
    config = load_alerts_config(project.conf_dir)
    if args.dry_run:
        for alert in find_alerts(project, config.rules):
            sys.stdout.write(alert.text() + "\n\n")
        return 0
    check_and_send(project, config)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("alerts", help="send alerts for failed runs, slow steps, held segments, ...")
    parser.add_argument("--dry-run", action="store_true", help="print the current causes, send nothing")
    parser.set_defaults(handler=_check)

"""Alerts: what a drift alert and a batch-rejection alert say, which sinks are due, and how a sink's URL
reaches apprise.

A persisting drift must not become an alert storm: an alert is identified by its
fingerprint (model, model version, the sorted drifted columns; for a rejected batch: the stage and
the expectation that refused it), and each sink sends a fingerprint at most once per cooldown window. The state is a plain dict
{fingerprint: {sink name: last sent, ISO time}}; loading and saving it is
`monitoring.alert_delivery`'s job. Pure: no I/O, no clock (callers pass `now`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from monitoring.class_mix import describe_class_moves

AlertState = dict[str, dict[str, str]]

# Sink kind -> URL schemes apprise takes for it; a webhook's plain http(s) URL becomes apprise's JSON POST.
_WEBHOOK_SCHEMES = {"http": "json", "https": "jsons"}
_ACCEPTED_SCHEMES: dict[str, tuple[str, ...]] = {
    "webhook": ("http", "https", "json", "jsons"),
    "slack": ("slack", "https"),
    "email": ("mailto", "mailtos"),
}


class Alert(Protocol):
    """What a sink is sent: a title and a body, deduplicated by the fingerprint."""

    @property
    def fingerprint(self) -> str: ...

    def title(self) -> str: ...

    def body(self) -> str: ...


@dataclass(frozen=True)
class DriftAlert:
    """One drift verdict worth telling people about."""

    model: str
    model_version: str  # the champion the batch was compared against
    batch_id: str
    drifted_columns: tuple[str, ...]
    drifted_share: float
    report: str | None = None  # where the HTML report lies
    drifted_checks: tuple[str, ...] = ()  # data_drift, embedding_drift, prediction_drift, … (when the monitor names them)
    findings: tuple[str, ...] = ()  # "check:feature_or_modality", e.g. "embedding_drift:audio"
    # (finding, what moved): for a prediction finding, the classes whose share moved most, by name; not part
    # of the fingerprint, so a drift whose numbers wobble from batch to batch is still the same drift
    finding_details: tuple[tuple[str, str], ...] = ()

    @property
    def fingerprint(self) -> str:
        """Same model version, same drifted checks, columns and findings: the same drift, whichever batch shows it."""
        parts = (sorted(self.drifted_checks), sorted(self.drifted_columns), sorted(self.findings))
        key = "|".join([self.model, self.model_version, *("/".join(part) for part in parts)])
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def title(self) -> str:
        return f"flywheel: drift on {self.model} v{self.model_version}"

    def body(self) -> str:
        lines = [f"Batch {self.batch_id} drifted from the training window of {self.model} v{self.model_version}."]
        if self.drifted_checks:
            lines.append(f"Checks that drifted: {', '.join(self.drifted_checks)}.")
        if self.drifted_columns:
            lines.append(f"Drifted columns ({self.drifted_share:.0%} of those checked): {', '.join(self.drifted_columns)}.")
        details = dict(self.finding_details)
        lines += [f"- {finding}" + (f": {details[finding]}" if finding in details else "") for finding in self.findings]
        lines.append("The same drift is not alerted again within the cooldown window.")
        if self.report:
            lines.append(f"Report: {self.report}")
        return "\n".join(lines)


def build_drift_alert(model: str, monitor: dict[str, Any], batch_id: str) -> DriftAlert | None:
    """The alert for a monitor result (as `stage_monitor` returns it); None when nothing drifted."""
    if not monitor.get("drift_detected"):
        return None
    return DriftAlert(model=model, model_version=str(monitor["champion"]), batch_id=batch_id,
                      drifted_columns=tuple(sorted(monitor.get("drifted_columns") or ())),
                      drifted_share=float(monitor.get("drifted_share") or 0.0), report=monitor.get("report"),
                      drifted_checks=tuple(sorted(monitor.get("drifted_checks") or ())),
                      findings=tuple(str(f) for f in monitor.get("findings") or ()),
                      finding_details=tuple(describe_class_moves(monitor.get("checks") or {}).items()))


@dataclass(frozen=True)
class RejectionAlert:
    """A batch that a data stage refused as a whole (validation's bounds, its share of bad rows): the
    strongest drift signal there is, alerted whether or not there is a champion to compare it with."""

    model: str
    batch_id: str
    stage: str  # the stage that refused it (validate, …)
    expectation: str  # the expectation that failed, as the stage names it
    observed: str
    bound: str
    detail: str  # the stage's own message (evidence, example ids)
    model_version: str | None = None  # the champion it was monitored against; None before the first
    monitor_error: str | None = None  # the drift check itself failed (the rejection is alerted all the same)
    drifted_checks: tuple[str, ...] = ()  # what monitoring found on the batch as it arrived
    drifted_columns: tuple[str, ...] = ()
    report: str | None = None

    @property
    def fingerprint(self) -> str:
        """Same model, stage and expectation: the same broken source, whichever batch shows it, so a source
        that keeps failing alerts once per cooldown (and a re-run of the batch not again)."""
        key = "|".join([self.model, "rejected", self.stage, self.expectation])
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def title(self) -> str:
        return f"flywheel: batch {self.batch_id} rejected by {self.stage} ({self.model})"

    def body(self) -> str:
        lines = [f"Batch {self.batch_id} was rejected by {self.stage}: {self.expectation} observed {self.observed}, "
                 f"bound {self.bound}.", self.detail]
        if self.monitor_error is not None:
            lines.append(f"The drift check of the batch failed: {self.monitor_error}")
        elif self.model_version is None:
            lines.append("No champion yet: the batch was not compared with a training window.")
        elif self.drifted_checks:
            lines.append(f"Against the training window of {self.model} v{self.model_version}, these checks drifted: "
                         f"{', '.join(self.drifted_checks)}.")
            if self.drifted_columns:
                lines.append(f"Drifted columns: {', '.join(self.drifted_columns)}.")
        else:
            lines.append(f"Against the training window of {self.model} v{self.model_version}, no check drifted.")
        lines.append("The batch never enters the training window; the same rejection is not alerted again within "
                     "the cooldown window.")
        if self.report:
            lines.append(f"Report: {self.report}")
        return "\n".join(lines)


def build_rejection_alert(model: str, rejection: dict[str, Any], monitor: dict[str, Any], batch_id: str) -> RejectionAlert:
    """The alert for a rejected batch (`rejection` as the run summary holds it) and its monitor result."""
    champion = monitor.get("champion")
    return RejectionAlert(model=model, batch_id=batch_id, stage=str(rejection["stage"]),
                          expectation=str(rejection["expectation"]), observed=str(rejection["observed"]),
                          bound=str(rejection["bound"]), detail=str(rejection.get("detail", "")),
                          model_version=str(champion) if champion is not None else None,
                          monitor_error=monitor.get("error") if monitor.get("status") == "failed" else None,
                          drifted_checks=tuple(sorted(monitor.get("drifted_checks") or ())),
                          drifted_columns=tuple(sorted(monitor.get("drifted_columns") or ())),
                          report=monitor.get("report"))


def due_sinks(state: AlertState, fingerprint: str, sinks: list[str], now: datetime, cooldown: timedelta) -> list[str]:
    """The sinks that have not sent this fingerprint within the cooldown (a sink that failed is due again)."""
    sent = state.get(fingerprint, {})
    return [sink for sink in sinks if sink not in sent or now - datetime.fromisoformat(sent[sink]) >= cooldown]


def mark_sent(state: AlertState, fingerprint: str, sinks: list[str], now: datetime, cooldown: timedelta) -> AlertState:
    """A new state with these sinks' sends recorded; entries whose cooldown has long passed are dropped."""
    kept = {fp: {sink: at for sink, at in sent.items() if now - datetime.fromisoformat(at) < 2 * cooldown}
            for fp, sent in state.items()}
    kept = {fp: sent for fp, sent in kept.items() if sent}
    kept[fingerprint] = {**kept.get(fingerprint, {}), **{sink: now.isoformat() for sink in sinks}}
    return kept


def apprise_url(kind: str, url: str) -> str:
    """The URL apprise is given for a sink; a scheme that does not fit the kind raises, naming what fits."""
    if kind not in _ACCEPTED_SCHEMES:
        raise ValueError(f"unknown alert sink kind {kind!r}; accepted: {sorted(_ACCEPTED_SCHEMES)}")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in _ACCEPTED_SCHEMES[kind]:
        raise ValueError(f"a {kind} sink needs a URL starting with one of "
                         f"{[s + '://' for s in _ACCEPTED_SCHEMES[kind]]}, got {url.split('://')[0]!r}")
    if kind == "webhook" and scheme.lower() in _WEBHOOK_SCHEMES:
        return f"{_WEBHOOK_SCHEMES[scheme.lower()]}://{rest}"
    return url

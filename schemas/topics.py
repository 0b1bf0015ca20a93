"""Topic names and their settings (DESIGN.md, Topics)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DLQ_SUFFIX", "TopicSpec", "Topics"]

DLQ_SUFFIX = ".dlq.v1"
_HOUR_MS = 3_600_000
_DAY_MS = 24 * _HOUR_MS

# Compaction settings that keep tombstones and dirty segments short-lived, so the state
# a service loads is the near future plus a week, not years of history.
_COMPACT = {
    "cleanup.policy": "compact",
    "min.cleanable.dirty.ratio": "0.1",
    "segment.ms": str(_HOUR_MS),
    "delete.retention.ms": str(_HOUR_MS),
    "min.compaction.lag.ms": "0",
}


def _delete(days: int) -> dict[str, str]:
    return {"cleanup.policy": "delete", "retention.ms": str(days * _DAY_MS)}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    config: dict[str, str]


@dataclass(frozen=True)
class Topics:
    """All topic names, with an optional prefix (e.g. ``acc.`` on a shared cluster)."""

    prefix: str = ""

    @property
    def his_appointments(self) -> str:
        return f"{self.prefix}his.appointments.v1"

    @property
    def appointments(self) -> str:
        return f"{self.prefix}appointments.v1"

    @property
    def practice_config(self) -> str:
        return f"{self.prefix}practice.config.v1"

    @property
    def patient_preferences(self) -> str:
        return f"{self.prefix}patient.preferences.v1"

    @property
    def reminders_due(self) -> str:
        return f"{self.prefix}reminders.due.v1"

    @property
    def reminders_fired(self) -> str:
        return f"{self.prefix}reminders.fired.v1"

    @property
    def outcomes(self) -> str:
        return f"{self.prefix}notifications.outcomes.v1"

    @staticmethod
    def dlq(topic: str) -> str:
        return f"{topic}{DLQ_SUFFIX}"

    def inputs(self) -> list[str]:
        """Topics that a consumer reads and that therefore have a dead-letter topic."""
        return [
            self.his_appointments,
            self.appointments,
            self.practice_config,
            self.patient_preferences,
            self.reminders_due,
            self.outcomes,
        ]

    def specs(self) -> list[TopicSpec]:
        main = [
            TopicSpec(self.his_appointments, _delete(7)),
            TopicSpec(self.appointments, dict(_COMPACT)),
            TopicSpec(self.practice_config, dict(_COMPACT)),
            TopicSpec(self.patient_preferences, dict(_COMPACT)),
            TopicSpec(self.reminders_due, _delete(7)),
            TopicSpec(self.reminders_fired, dict(_COMPACT)),
            TopicSpec(self.outcomes, _delete(30)),
        ]
        dlqs = [TopicSpec(self.dlq(t), _delete(30)) for t in self.inputs()]
        return main + dlqs

"""Which appointments get a timer, and what a timer does when it comes up (pure).

- Only ``booked`` appointments get a timer: the notifier sends only for ``booked``, and a
  ``pending`` appointment that fired would have used up the one reminder of its start
  before it was confirmed. Every other status removes the timer; the fired marker stays.
- A new start is a new reminder (``reminder_id_for(practice, appointment, start)``); a
  start whose reminder already fired gets no second one.
- A start in the past removes the timer (a move into the past, or an appointment entered
  after the fact), unless the appointment was known, booked and not reminded before it
  began: that timer was missed while the service was down and fires at once with
  ``too_late``. The test is ``updated_at < start``, which a reload decides the same way.
- A timer that comes up more than ``missed_after`` late (the service was down, or the
  partition moved) is decided again at the moment it fires (``compute_due(now=...)``):
  at once, after the quiet window, or ``too_late``; never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, NamedTuple, Protocol, TypeVar

from services.reminder_scheduler.due_time import (
    Policy,
    Reason,
    compute_due,
    planned_moment,
)
from services.reminder_scheduler.records import (
    APPOINTMENT_DECODER,
    EPOCH,
    IDENTIFIER,
    MAX_SEQUENCE,
    SLOT_TIMES,
    AppointmentState,
    MarkerState,
    from_ms,
    from_us,
    to_ms,
    to_us,
)
from services.reminder_scheduler.timers import Change, PartitionTimers, Timer, TimerFields

__all__ = ["REMINDED_STATUS", "Event", "Fire", "Planner"]

REMINDED_STATUS = "booked"

# What happened to a timer, as counted by reminders_scheduler_timers_total{event}.
Event = Literal["planned", "rescheduled", "cancelled", "fired", "missed"]


class Fire(NamedTuple):
    """A timer to fire now: its planned due time, and the reason if there is no good moment."""

    timer: Timer
    reason: Reason | None
    missed: bool

    @property
    def due_at(self) -> datetime:
        return from_ms(self.timer.due_ms)


_new_fire = tuple.__new__  # Fire(...) without the keyword-argument layer


_PLANNED_CACHE_SIZE = 200_000
_US = timedelta(microseconds=1)


class Fetched(Protocol):
    """A fetched record of appointments.v1 (aiokafka's ConsumerRecord)."""

    @property
    def key(self) -> bytes | None: ...

    @property
    def value(self) -> bytes | None: ...


_R = TypeVar("_R", bound=Fetched)


@dataclass(frozen=True, slots=True)
class _Planned:
    moment: datetime  # planned_moment(start, policy)
    ms: int  # the same in ms
    latest_ms: int  # start - min_lead in ms: no reminder later than this


class Planner:
    """The timers of one partition, kept in line with its appointments and fired markers."""

    def __init__(
        self,
        timers: PartitionTimers,
        policy_of: Callable[[str], Policy],
        *,
        missed_after: timedelta = timedelta(seconds=60),
    ) -> None:
        self.timers = timers
        self._policy_of = policy_of
        self._missed_after = missed_after
        # planned_moment per policy and start: appointments share their starts (slots).
        # Keyed by id(policy), then the start in µs (no tuple built per record); the
        # policies are kept so that no id is reused meanwhile.
        self._planned: dict[int, dict[int, _Planned]] = {}
        self._planned_count = 0
        self._policies: dict[int, Policy] = {}
        self._now: datetime | None = None
        self._now_us = 0
        self._fire_now: datetime | None = None
        self._fire_now_us = 0
        self._fire_policies: dict[bytes, tuple[Policy, int]] = {}
        self._missed_after_us = missed_after // _US

    def _due(self, start_us: int, booked_s: int, policy: Policy) -> tuple[int, Reason | None]:
        """``compute_due`` in milliseconds, with the planned moment cached per start."""
        starts = self._planned.get(id(policy))
        planned = starts.get(start_us) if starts is not None else None
        if planned is None:
            if self._planned_count >= _PLANNED_CACHE_SIZE:
                self._planned.clear()
                self._policies.clear()
                self._planned_count = 0
            moment = planned_moment(from_us(start_us), policy)
            latest_ms = (start_us - policy.min_lead // _US) // 1000
            planned = _Planned(moment, to_ms(moment), latest_ms)
            self._planned.setdefault(id(policy), {})[start_us] = planned
            self._planned_count += 1
            self._policies[id(policy)] = policy
        booked_ms = booked_s * 1000
        if booked_ms <= planned.ms <= planned.latest_ms:
            # compute_due's plain case: booked before the planned moment, which leaves
            # enough lead; the moment itself (tested to agree with compute_due)
            return planned.ms, None
        due = compute_due(from_us(start_us), from_ms(booked_ms), policy, planned=planned.moment)
        return to_ms(due.at), due.reason

    # ------------------------------------------------------------------ appointments
    def appointment(self, key: bytes, appointment: AppointmentState, now: datetime) -> Event | None:
        """Apply the current state of an appointment."""
        practice_id, _, patient_id, status, sequence, start_us, end_us, booked_us, updated_us = (
            appointment
        )
        if status != REMINDED_STATUS:
            return self._cancel(key)
        # booked_at at whole seconds: the timer stores it so, and plans again from it
        booked_s = booked_us // 1_000_000
        policy = self._policy_of(practice_id)
        starts = self._planned.get(id(policy))
        planned = starts.get(start_us) if starts is not None else None
        if planned is not None and booked_s * 1000 <= planned.ms <= planned.latest_ms:
            due_ms, reason = planned.ms, None  # _due's plain case, without the call
        else:
            due_ms, reason = self._due(start_us, booked_s, policy)
        if now is not self._now:  # one conversion per batch of records, not per record
            self._now, self._now_us = now, to_us(now)
        if start_us <= self._now_us:
            if updated_us >= start_us:
                return self._cancel(key)
            reason = reason or "too_late"  # missed while down: fire at once with why
        change = self.timers.plan(
            key,
            start_us,
            end_us // 1_000_000,
            booked_s,
            sequence,
            due_ms,
            reason,
            patient_id.encode(),
        )
        # identity tests: a dict keyed by the enum would hash it in Python per record
        if change is Change.PLANNED:
            return "planned"
        if change is Change.RESCHEDULED:
            return "rescheduled"
        return None

    def plan_fetched(
        self,
        records: Iterable[_R],
        now: datetime,
        ours: Container[str],
        general: Callable[[_R], None],
    ) -> tuple[int, int]:
        """Apply a fetched batch in order, with the outcome of :func:`read_appointment`
        and :meth:`appointment` per record: (timers planned, timers rescheduled).

        The plain case, nearly every record of a load, is read and planned here without
        a call per step: a booked appointment ahead of ``now``, under its own key, of a
        practice in ``ours`` (read before, on this partition), with plain identifiers,
        slot times read before and a planned moment that needs no second look. Every
        other record goes to ``general``, in its place in the batch (which reads, plans or
        refuses it, and counts).
        """
        if now is not self._now:
            self._now, self._now_us = now, to_us(now)
        now_us = self._now_us
        decode = APPOINTMENT_DECODER.decode
        identifier = IDENTIFIER.fullmatch
        slot_times = SLOT_TIMES
        plan = self.timers.plan
        planned_cache = self._planned
        policy_of = self._policy_of
        # the planned moments of the practice's policy by start, per practice for this
        # batch (an empty dict until the general path planned one)
        starts_of: dict[str, dict[int, _Planned]] = {}
        no_starts: dict[int, _Planned] = {}
        planned_count = rescheduled = 0
        for record in records:
            key, value = record.key, record.value
            change: Change | None = None
            # Whatever raises in here (a value msgspec refuses included) goes to
            # ``general`` as well: read_appointment names why, and apply contains what is
            # about the record, as for a record outside the plain case.
            try:
                if key is not None and value is not None:
                    doc = decode(value)
                    practice_id = doc.practice_id
                    appointment_id = doc.appointment_id
                    patient_id = doc.patient.id
                    start_us = slot_times.get(doc.start)
                    end_us = slot_times.get(doc.end)
                    sequence = doc.sequence
                    if (
                        doc.status == REMINDED_STATUS
                        and practice_id in ours
                        and start_us is not None
                        and end_us is not None
                        and now_us < start_us < end_us
                        and 0 <= sequence <= MAX_SEQUENCE
                        and (
                            (appointment_id.isascii() and appointment_id.isalnum())
                            or identifier(appointment_id) is not None
                        )
                        and len(appointment_id) <= 64
                        and (
                            (patient_id.isascii() and patient_id.isalnum())
                            or identifier(patient_id) is not None
                        )
                        and len(patient_id) <= 64
                        and not (len(patient_id) in (8, 9) and patient_id.isdigit())
                        and key == f"{practice_id}/{appointment_id}".encode()
                    ):
                        starts = starts_of.get(practice_id)
                        if starts is None:
                            policy_id = id(policy_of(practice_id))
                            starts = planned_cache.get(policy_id)
                            if starts is not None:  # else not kept: general plans one
                                starts_of[practice_id] = starts
                            else:
                                starts = no_starts
                        # whole seconds, floored (a // costs twice that)
                        since = doc.booked_at - EPOCH
                        booked_s = since.days * 86_400 + since.seconds
                        planned = starts.get(start_us)
                        # else general plans the moment (and caches it) or finds a reason
                        if planned is not None and (
                            booked_s * 1000 <= planned.ms <= planned.latest_ms
                        ):
                            change = plan(
                                key,
                                start_us,
                                end_us // 1_000_000,
                                booked_s,
                                sequence,
                                planned.ms,
                                None,
                                patient_id.encode(),
                            )
            except Exception:
                change = None
            if change is None:
                general(record)
            elif change is Change.PLANNED:
                planned_count += 1
            elif change is Change.RESCHEDULED:
                rescheduled += 1
        return planned_count, rescheduled

    def removed(self, key: bytes) -> tuple[Event | None, bool]:
        """The appointment's tombstone: (event, whether its fired marker must go too)."""
        pending, marker = self.timers.forget(key)
        return ("cancelled" if pending else None), marker

    def _cancel(self, key: bytes) -> Event | None:
        return "cancelled" if self.timers.cancel(key) else None

    # ------------------------------------------------------------------ markers
    def marker(self, key: bytes, marker: MarkerState) -> None:
        self.timers.set_marker(
            key, to_us(marker.start) // 1_000_000, to_us(marker.end) // 1_000_000
        )

    # ------------------------------------------------------------------ policy changes
    def replan_practice(self, practice_id: str, now: datetime) -> int:
        """Plan the practice's pending timers again (its policy or time zone changed)."""
        policy = self._policy_of(practice_id)
        changed = 0
        for timer in list(self.timers.pending_timers(f"{practice_id}/".encode())):
            start = from_us(timer.start_us)
            if start <= now:
                continue  # owed and due at once whatever the policy
            due_ms, reason = self._due(timer.start_us, timer.booked_s, policy)
            fields = TimerFields(
                start_us=timer.start_us,
                end_s=timer.end_s,
                booked_s=timer.booked_s,
                sequence=timer.sequence,
                due_ms=due_ms,
                reason=reason,
                patient_id=timer.patient_id,
            )
            if self.timers.upsert(timer.key, fields) is Change.RESCHEDULED:
                changed += 1
        return changed

    # ------------------------------------------------------------------ firing
    def at_fire(self, timer: Timer, now: datetime) -> Fire | None:
        """Fire the timer now (with a reason when there is no good moment), or move it.

        ``None`` means the timer was late and now falls in quiet hours: it was moved to
        the end of the window, which is still ``min_lead`` before the start.
        """
        if now is not self._fire_now:  # one conversion per batch of timers
            self._fire_now, self._fire_now_us = now, to_us(now)
            self._fire_policies.clear()  # a policy may have changed since the last batch
        now_us = self._fire_now_us
        key = timer.key
        practice = key[: key.index(b"/")]
        # the policy and its lead in µs, once per practice and batch
        known = self._fire_policies.get(practice)
        if known is None:
            policy = self._policy_of(practice.decode())
            known = self._fire_policies[practice] = (policy, policy.min_lead // _US)
        policy, min_lead_us = known
        missed = now_us - timer.due_ms * 1000 > self._missed_after_us
        if timer.reason is not None:
            return _new_fire(Fire, (timer, timer.reason, missed))
        if now_us > timer.start_us - min_lead_us:
            return _new_fire(Fire, (timer, "too_late", missed))
        if not missed:
            return _new_fire(Fire, (timer, None, False))
        start = from_us(timer.start_us)
        again = compute_due(start, from_us(timer.booked_s * 1_000_000), policy, now=now)
        if again.reason is not None or again.at <= now:
            return Fire(timer, again.reason, True)
        self.timers.upsert(
            timer.key,
            TimerFields(
                start_us=timer.start_us,
                end_s=timer.end_s,
                booked_s=timer.booked_s,
                sequence=timer.sequence,
                due_ms=to_ms(again.at),
                reason=None,
                patient_id=timer.patient_id,
            ),
        )
        return None

    def fired(self, fire: Fire) -> None:
        """The marker of this firing is committed."""
        timer = fire.timer
        self.timers.set_marker(timer.key, timer.start_us // 1_000_000, timer.end_s)

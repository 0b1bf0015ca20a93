"""booking_events: HIS appointment events in, the current state of every appointment out.

Modules: ``normalize`` (native JSON -> AppointmentEvent, reasons for refusals, the
Appointment record), ``fhir`` (FHIR R4 Appointment -> AppointmentEvent), ``classify``
(meeting rules; pure, also used by the notifier), ``ledger`` (last-seen state, the
duplicate/stale rule), ``metrics`` and ``app`` (the service, ``create_app``).

Nothing heavy is imported here, so ``from services.booking_events.classify import
classify`` stays cheap for the notifier.
"""

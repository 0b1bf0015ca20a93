"""booking_events: HIS appointment events in, the current state of every appointment out.

Parsing HIS events (native and FHIR R4) and classifying meetings are pure domain code
in :mod:`services.domain` (shared with the HIS gateway and the notifier). Modules here:
``normalize`` (the Appointment record), ``ledger`` (last-seen state, the duplicate/stale
rule), ``batch`` (one batch's decisions), ``metrics`` and ``app`` (the service,
``create_app``).
"""

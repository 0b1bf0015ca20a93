"""The pure domain: rules on plain models, no framework, no Kafka, no service.

``his_events`` (HIS events, native and FHIR R4, to AppointmentEvent, with reason codes)
and ``classify`` (is an agenda entry a meeting about the patient?). Any service may import
this package; this package imports only ``schemas`` and pure ``services.common`` helpers.
"""

"""The one HIS-event parser, as the gateway sees it.

Every request body is judged by exactly the code booking_events runs on
``his.appointments.v1`` (``services.domain.his_events``), so a vendor gets at the door the
verdict the pipeline would give, with the same reason codes as the DLQ. This module is the
gateway's only import of it.
"""

from __future__ import annotations

from services.domain.his_events import FHIR_CONTENT_TYPE, Problem, problems

__all__ = ["FHIR_CONTENT_TYPE", "Problem", "problems"]

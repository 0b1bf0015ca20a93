"""his-gateway: the HTTP front door for HIS vendors (FHIR REST, OAuth 2.0 client credentials).

``reminders run his-gateway`` serves it; :func:`services.his_gateway.app.create_app` builds it.
"""

"""practice-admin: the beheeromgeving and the patient links (ASGI)."""

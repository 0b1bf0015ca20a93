"""practice-admin: the beheeromgeving where a practice switches reminders, writes its texts
and sees what was sent, and the patient links (DESIGN.md, "At the edges")."""

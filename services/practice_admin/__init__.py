"""practice-admin: the beheeromgeving where a practice switches reminders, writes its texts
and sees what was sent (DESIGN.md, "At the edges")."""

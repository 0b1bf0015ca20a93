"""Reminder services for e-afspraken: booking_events, reminder_scheduler, notifier."""

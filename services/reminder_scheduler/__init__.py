"""reminder_scheduler: one durable timer per booked appointment; emits reminders.due.v1.

The rule of when (due_time), the compact timers (timers), which appointments get one and
what a late timer does (planner), the transactional firing per partition (firing) and
the service that joins the consumer group (service, app).
"""

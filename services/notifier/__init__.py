"""The notifier: decides whether a due reminder is sent, sends it, and records why."""

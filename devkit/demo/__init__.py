"""The local end-to-end run: synthetic workload, the pipeline harness, ``reminders demo``."""

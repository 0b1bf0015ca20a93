"""What the services share: settings, Kafka plumbing, the partition rule, tables, clock,
health and metrics."""

from services.common.clock import Clock, FakeClock, SystemClock
from services.common.codec import DecodeError, decode, encode
from services.common.partition import partition_for
from services.common.settings import KafkaSettings, Settings, load_settings
from services.common.topics import Topics

__all__ = [
    "Clock",
    "DecodeError",
    "FakeClock",
    "KafkaSettings",
    "Settings",
    "SystemClock",
    "Topics",
    "decode",
    "encode",
    "load_settings",
    "partition_for",
]

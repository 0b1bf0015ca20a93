"""What the services share: settings, Kafka plumbing, the partition rule, tables, clock,
health and metrics."""

from schemas.topics import Topics
from services.common.clock import Clock, FakeClock, SystemClock
from services.common.settings import KafkaSettings, Settings, load_settings
from services.domain.codec import DecodeError, decode, encode
from services.domain.partition import partition_for

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

"""The notifier's wiring: settings to sender options, the app object, the config check."""

from __future__ import annotations

import pytest
from faststream import FastStream

from services.common.practice_config import validate_for_table
from services.common.settings import PushSettings, Settings, SmtpSettings
from services.domain.codec import DecodeError
from services.notifier.app import NotifierService, create_app, smtp_options, vapid_options
from services.notifier.samples import sample_config


def test_smtp_settings_become_pool_options() -> None:
    options = smtp_options(
        SmtpSettings(
            host="smtp.example.org",
            port=587,
            security="starttls",
            username="notifier",
            password="s3cret",  # type: ignore[arg-type]
            ca_file="/etc/ca.pem",
            pool_size=3,
        )
    )
    assert (options.host, options.port, options.security) == ("smtp.example.org", 587, "starttls")
    assert (options.username, options.password, options.ca_file) == (
        "notifier",
        "s3cret",
        "/etc/ca.pem",
    )
    assert options.pool_size == 3
    assert "s3cret" not in repr(options)


def test_push_is_off_without_a_vapid_key() -> None:
    assert vapid_options(PushSettings()) is None
    vapid = vapid_options(PushSettings(vapid_private_key="abc"))  # type: ignore[arg-type]
    assert vapid is not None and vapid.private_key == "abc"


def test_create_app_builds_without_connecting() -> None:
    settings = Settings(kafka={"topic_prefix": "acc."})  # type: ignore[arg-type]
    app = create_app(settings)
    assert isinstance(app, FastStream)
    service = NotifierService(settings)
    assert service.group_id == "acc.notifier"
    ready, details = service.readiness()
    assert not ready and details == {"partitions": {}}


def test_a_config_with_a_forbidden_template_is_refused() -> None:
    assert validate_for_table(sample_config()) == sample_config()
    bad = sample_config(templates={"default": {"nl": {"subject": "{{ range(10) }}"}}})
    with pytest.raises(DecodeError) as refused:
        validate_for_table(bad)
    assert refused.value.reason == "invalid_config"
    assert "subject" in refused.value.detail

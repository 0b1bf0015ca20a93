"""Issue 19: the notifier renders only the parts of the channels a reminder goes by.

Whatever config the config edge accepts (tests/support/wide.py's generator), whatever
appointment (type, start, place, practitioner) and language: the e-mail parts rendered
alone equal the e-mail parts of a render of both channels, the push parts likewise, on a
cold and on a warm per-config cache; a template that fails fails the channel it belongs
to with the same reason; a part not asked for is refused, never rendered on the quiet.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import assume, event, given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.models import Appointment, PracticeConfig
from services.common.practice_config import ConfigRejected, validate_practice_config
from services.domain.render import (
    NotRendered,
    RenderedReminder,
    TemplateRejected,
    render_reminder,
    sample_appointment,
)
from services.notifier.samples import sample_config
from tests.support.wide import config_documents, edge_settings, odd_text, plain_text, sane_moment

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
_EMAIL_PARTS = ("subject", "text", "html")
_LANGUAGES = st.one_of(st.sampled_from(["nl", "en", "fr", "", "NL"]), odd_text)


def _outcome(
    config: PracticeConfig, appointment: Appointment, language: str, channels: tuple[str, ...]
) -> RenderedReminder | str:
    try:
        return render_reminder(config, appointment, language, channels=channels)
    except TemplateRejected as exc:
        return exc.reason


def _appointment(data: st.DataObject, config: PracticeConfig) -> Appointment:
    code = data.draw(st.sampled_from([*list(config.appointment_types)[:3], "NOT-LISTED"]))
    base = sample_appointment(config, code, NOW)
    start = data.draw(sane_moment)
    fields: dict[str, Any] = {
        **base.model_dump(),
        "start": start,
        "end": start + timedelta(minutes=10),
        "practitioner": {"id": "pr-1", "display": data.draw(plain_text | odd_text)},
        "location": data.draw(st.none() | st.fixed_dictionaries({"display": plain_text})),
    }
    try:
        return Appointment.model_validate(fields)
    except ValidationError:
        assume(False)
        raise


@edge_settings
@given(doc=config_documents(), data=st.data())
def test_the_parts_of_one_channel_are_those_of_a_render_of_both(
    doc: Any, data: st.DataObject
) -> None:
    try:
        config = validate_practice_config(doc)
    except ConfigRejected:
        assume(False)
        raise
    appointment = _appointment(data, config)
    language = data.draw(_LANGUAGES)
    # Cold: a copy of the config has its own cache entry; warm: the same config again.
    cold = config.model_copy()
    both = _outcome(cold, appointment, language, ("email", "push"))
    email = _outcome(config, appointment, language, ("email",))
    push = _outcome(config, appointment, language, ("push",))
    again = _outcome(config, appointment, language, ("email", "push"))
    assert again == both
    if isinstance(both, str):
        event("rejected")
        # The first failing part names itself; its channel alone fails the same way.
        failing = email if any(f", {p}:" in both for p in _EMAIL_PARTS) else push
        assert failing == both
        return
    event("rendered")
    assert isinstance(email, RenderedReminder) and isinstance(push, RenderedReminder)
    assert email.email == both.email
    assert push.push == both.push
    with pytest.raises(NotRendered):
        _ = email.push
    with pytest.raises(NotRendered):
        _ = push.email


def test_a_broken_push_template_does_not_stop_an_email_only_reminder() -> None:
    # (Checked configs hold no such template; a config built around the check could.)
    config = sample_config(
        templates={"default": {"nl": {"push_title": "{{ label", "subject": "Afspraak"}}}
    )
    appointment = sample_appointment(config, "C10", NOW)
    assert render_reminder(config, appointment, "nl", channels=("email",)).email.subject == (
        "Afspraak"
    )
    with pytest.raises(TemplateRejected, match="push_title"):
        render_reminder(config, appointment, "nl", channels=("push",))


def test_a_new_config_object_is_rendered_with_its_own_templates() -> None:
    # The per-config cache is keyed by the config object: a new version is never served
    # the texts of the one before.
    first = sample_config(templates={"default": {"nl": {"subject": "Eerste"}}})
    second = sample_config(templates={"default": {"nl": {"subject": "Tweede"}}})
    appointment = sample_appointment(first, "C10", NOW)
    assert render_reminder(first, appointment, "nl").email.subject == "Eerste"
    assert render_reminder(second, appointment, "nl").email.subject == "Tweede"
    assert render_reminder(first, appointment, "nl").email.subject == "Eerste"

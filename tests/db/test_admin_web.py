"""practice-admin over HTTP on a real database (SQLite and PostgreSQL), Kafka faked; the
send log reads rows put into the insights projection.

Sign-in, sessions, CSRF, authorisation, saves (validation, version, audit), logo checks,
security headers. The browser tests (tests/web) do the same against a real broker.
"""

from __future__ import annotations

import base64
import io
import json
import random
import re
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from PIL import Image
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.clock import FakeClock
from services.common.db import session_factory
from services.practice_admin.accounts import add_user
from services.practice_admin.models import AuditEntry
from services.practice_admin.outcomes import LogRow, ProjectionOutcomes, Scheduled
from services.practice_admin.signin import RateLimits, SignIn
from services.practice_admin.web import MAX_BODY_BYTES, Pages, build_app
from tests.web.admin_support import (
    START,
    FakeConfigs,
    FakeMailer,
    csrf_of,
    practice,
    project_log,
    request_code,
    sign_in,
)

pytestmark = pytest.mark.db

P1, P2 = "01999001", "01999002"
PAGES = ["", "instellingen", "teksten", "overleggen", "verzendlog", "follow-up"]
BEHEERDER = "beheer@delinde.example"
MEDEWERKER = "balie@delinde.example"


@dataclass
class Site:
    pages: Pages
    configs: FakeConfigs
    outcomes: ProjectionOutcomes
    mailer: FakeMailer
    clock: FakeClock
    engine: AsyncEngine

    def client(self, ip: str = "127.0.0.1") -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=build_app(self.pages), client=(ip, 50000))
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def site(db_engine: AsyncEngine) -> AsyncIterator[Site]:
    db = session_factory(db_engine)
    clock = FakeClock(START)
    async with db.begin() as session:
        await add_user(session, BEHEERDER, P1, "beheerder", clock.now())
        await add_user(session, MEDEWERKER, P1, "medewerker", clock.now())
        await add_user(session, "other@elders.example", P2, "beheerder", clock.now())
    configs = FakeConfigs({P1: practice(P1), P2: practice(P2, name="Elders")})
    outcomes = ProjectionOutcomes(db)
    mailer = FakeMailer()
    pages = Pages(
        sessions=db,
        signin=SignIn(db, b"k" * 32, limits=RateLimits(codes_per_address=5, steps_per_ip=40)),
        configs=configs,
        outcomes=outcomes,
        mailer=mailer,
        clock=clock,
        secure_cookies=False,
        idle_minutes=30,
        code_minutes=10,
    )
    yield Site(pages, configs, outcomes, mailer, clock, db_engine)


# --------------------------------------------------------------------------- sign-in


async def test_sign_in_with_the_mailed_code_then_logout_ends_the_session(site: Site) -> None:
    async with site.client() as client:
        answer = await sign_in(client, site.mailer, BEHEERDER)
        cookie = answer.cookies.get("pa_session")
        assert cookie
        set_cookie = answer.headers["set-cookie"].lower()
        assert "httponly" in set_cookie and "samesite=lax" in set_cookie
        home = await client.get("/")
        assert home.status_code == 303 and home.headers["location"] == f"/praktijk/{P1}/"
        page = await client.get(f"/praktijk/{P1}/")
        assert page.status_code == 200 and "Herinneringen staan AAN" in page.text
        out = await client.post("/logout", data={"csrf_token": csrf_of(page.text)})
        assert out.status_code == 303
    # The old cookie is worth nothing now: the session is gone on the server.
    async with site.client() as client:
        client.cookies.set("pa_session", cookie)
        again = await client.get(f"/praktijk/{P1}/")
        assert again.status_code == 303 and again.headers["location"] == "/login"


async def test_the_code_mail_holds_no_more_than_the_code(site: Site) -> None:
    async with site.client() as client:
        await request_code(client, BEHEERDER)
    (mail,) = site.mailer.sent
    assert mail["To"] == BEHEERDER
    assert "inlogcode" in mail["Subject"].lower()


async def test_a_code_used_twice_is_refused(site: Site) -> None:
    async with site.client() as client:
        sent = await request_code(client, BEHEERDER)
        code = site.mailer.last_code(BEHEERDER)
        token = csrf_of(sent.text)
        first = await client.post(
            "/login/code", data={"email": BEHEERDER, "code": code, "csrf_token": token}
        )
        assert first.status_code == 303
    async with site.client() as client:
        page = await client.get("/login")
        second = await client.post(
            "/login/code",
            data={"email": BEHEERDER, "code": code, "csrf_token": csrf_of(page.text)},
        )
        assert second.status_code == 422 and "pa_session" not in second.cookies


async def test_five_wrong_codes_void_the_code(site: Site) -> None:
    async with site.client() as client:
        sent = await request_code(client, BEHEERDER)
        code = site.mailer.last_code(BEHEERDER)
        token = csrf_of(sent.text)
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        for _ in range(5):
            answer = await client.post(
                "/login/code", data={"email": BEHEERDER, "code": wrong, "csrf_token": token}
            )
            assert answer.status_code == 422
        # The sixth try, even with the right code, finds the code void.
        sixth = await client.post(
            "/login/code", data={"email": BEHEERDER, "code": code, "csrf_token": token}
        )
        assert sixth.status_code == 422 and "pa_session" not in sixth.cookies
        assert 'aria-describedby="code-error"' in sixth.text


async def test_an_expired_code_is_refused(site: Site) -> None:
    async with site.client() as client:
        sent = await request_code(client, BEHEERDER)
        code = site.mailer.last_code(BEHEERDER)
        site.clock.advance(timedelta(minutes=11))
        answer = await client.post(
            "/login/code",
            data={"email": BEHEERDER, "code": code, "csrf_token": csrf_of(sent.text)},
        )
        assert answer.status_code == 422


async def test_the_answer_does_not_reveal_whether_an_address_has_an_account(
    site: Site,
) -> None:
    async with site.client() as client:
        known = await request_code(client, BEHEERDER)
        unknown = await request_code(client, "nobody@nowhere.example")
    assert known.status_code == unknown.status_code == 200
    strip = csrf_of(known.text), csrf_of(unknown.text)
    assert known.text.replace(strip[0], "").replace(BEHEERDER, "X") == unknown.text.replace(
        strip[1], ""
    ).replace("nobody@nowhere.example", "X")
    assert [m["To"] for m in site.mailer.sent] == [BEHEERDER]


async def test_code_requests_are_rate_limited_per_address_and_per_ip(site: Site) -> None:
    async with site.client(ip="10.0.0.1") as client:
        for _ in range(5):
            assert (await request_code(client, BEHEERDER)).status_code == 200
        limited = await request_code(client, BEHEERDER)
        assert limited.status_code == 429 and "Te veel pogingen" in limited.text
    async with site.client(ip="10.0.0.2") as client:
        # Another address from another IP is not affected; the same address still is.
        assert (await request_code(client, MEDEWERKER)).status_code == 200
        assert (await request_code(client, BEHEERDER)).status_code == 429
    async with site.client(ip="10.0.0.3") as client:
        answers = [
            (await request_code(client, f"n{i}@nowhere.example")).status_code for i in range(41)
        ]
        assert answers[-1] == 429 and answers[0] == 200


async def test_a_session_expires_when_idle(site: Site) -> None:
    async with site.client() as client:
        await sign_in(client, site.mailer, BEHEERDER)
        site.clock.advance(timedelta(minutes=29))
        assert (await client.get(f"/praktijk/{P1}/")).status_code == 200
        site.clock.advance(timedelta(minutes=29))
        assert (await client.get(f"/praktijk/{P1}/")).status_code == 200
        site.clock.advance(timedelta(minutes=31))
        gone = await client.get(f"/praktijk/{P1}/")
        assert gone.status_code == 303 and gone.headers["location"] == "/login"


# --------------------------------------------------------------------------- CSRF


async def test_every_post_route_refuses_a_request_without_the_csrf_token(site: Site) -> None:
    app = build_app(site.pages)
    posts = [
        route.path  # type: ignore[attr-defined]
        for route in app.routes
        if "POST" in (getattr(route, "methods", None) or set())
    ]
    assert len(posts) >= 9
    async with site.client() as client:
        await sign_in(client, site.mailer, BEHEERDER)
        for path in posts:
            url = path.replace("{practice_id}", P1)
            bare = await client.post(url, data={"email": BEHEERDER, "name": "X"})
            assert bare.status_code == 403, url
            forged = await client.post(url, data={"csrf_token": "forged", "name": "X"})
            assert forged.status_code == 403, url
    assert site.configs.published == []


async def test_the_sign_in_form_needs_the_token_of_its_own_cookie(site: Site) -> None:
    async with site.client() as client:
        page = await client.get("/login")
        token = csrf_of(page.text)
    async with site.client() as other:
        # A token from another browser (another cookie) does not count.
        await other.get("/login")
        answer = await other.post("/login", data={"email": BEHEERDER, "csrf_token": token})
        assert answer.status_code == 403
    assert site.mailer.sent == []


FORM = re.compile(r'<form method="post"(.*?)</form>', re.S)


async def test_every_form_on_every_page_carries_the_csrf_token(site: Site) -> None:
    async with site.client() as client:
        login = await client.get("/login")
        token = csrf_of(login.text)
        forms = FORM.findall(login.text)
        assert len(forms) == 2 and all(f'value="{token}"' in form for form in forms)
        await sign_in(client, site.mailer, BEHEERDER)
        for name in PAGES:
            page = await client.get(f"/praktijk/{P1}/{name}")
            token = csrf_of(page.text)
            forms = FORM.findall(page.text)
            assert forms, name
            for form in forms:
                assert f'name="csrf_token" value="{token}"' in form, (name, form[:200])


# --------------------------------------------------------------------------- authorisation


async def test_another_practice_answers_404_on_every_page_and_post(site: Site) -> None:
    async with site.client() as client:
        await sign_in(client, site.mailer, BEHEERDER)
        page = await client.get(f"/praktijk/{P1}/instellingen")
        token = csrf_of(page.text)
        for practice_id in (P2, "00000000", "no-such-practice"):
            for name in PAGES:
                answer = await client.get(f"/praktijk/{practice_id}/{name}")
                assert answer.status_code == 404, (practice_id, name)
                # The same answer as for a practice that does not exist at all.
                absent = await client.get(f"/praktijk/99999999/{name}")
                assert answer.text.replace(practice_id, "X") == absent.text.replace("99999999", "X")
                assert "Elders" not in answer.text
            for name in ("instellingen", "teksten", "overleggen", "teksten/voorbeeld"):
                answer = await client.post(
                    f"/praktijk/{practice_id}/{name}", data={"csrf_token": token}
                )
                assert answer.status_code == 404
    assert site.configs.published == []


async def test_signed_out_every_practice_page_redirects_to_login(site: Site) -> None:
    async with site.client() as client:
        for practice_id in (P1, P2):
            for name in PAGES:
                answer = await client.get(f"/praktijk/{practice_id}/{name}")
                assert answer.status_code == 303 and answer.headers["location"] == "/login"


async def test_a_medewerker_is_not_offered_the_form_and_a_forged_post_is_refused(
    site: Site,
) -> None:
    async with site.client() as client:
        await sign_in(client, site.mailer, MEDEWERKER)
        page = await client.get(f"/praktijk/{P1}/instellingen")
        assert page.status_code == 200
        assert "alleen een beheerder" in page.text
        assert 'name="version"' not in page.text and ">Opslaan<" not in page.text
        log = await client.get(f"/praktijk/{P1}/verzendlog")
        token = csrf_of(log.text)  # the logout form's token: a valid session token
        for name, data in (
            ("instellingen", {"name": "Gekaapt", "reminders_enabled": "off", "version": "3"}),
            ("teksten", {"code": "C10", "label": "Gekaapt", "version": "3"}),
            ("overleggen", {"keywords": "x", "version": "3"}),
        ):
            forged = await client.post(f"/praktijk/{P1}/{name}", data={**data, "csrf_token": token})
            assert forged.status_code == 403, name
    assert site.configs.published == []


# --------------------------------------------------------------------------- saving


def settings_form(token: str, **changes: str) -> dict[str, str]:
    form = {
        "csrf_token": token,
        "version": "3",
        "name": "Huisartsenpraktijk De Linde",
        "phone": "020-1234567",
        "reminders_enabled": "on",
        "send_policy": "hours_before",
        "send_hours": "24",
        "send_time": "18:00",
        "quiet_enabled": "on",
        "quiet_start": "21:00",
        "quiet_end": "08:00",
        "channel_email": "on",
        "channel_push": "on",
        "sender_email": "noreply@delinde.example",
        "sender_name": "De Linde",
        "accent_color": "#1a6e5c",
    }
    form.update(changes)
    return form


async def _beheerder(site: Site, client: httpx.AsyncClient) -> str:
    await sign_in(client, site.mailer, BEHEERDER)
    return csrf_of((await client.get(f"/praktijk/{P1}/instellingen")).text)


async def test_switching_off_publishes_the_next_version_and_is_audited(site: Site) -> None:
    async with site.client() as client:
        token = await _beheerder(site, client)
        page = await client.get(f"/praktijk/{P1}/instellingen")
        assert "al gepland zijn niet meer uit" in page.text
        answer = await client.post(
            f"/praktijk/{P1}/instellingen", data=settings_form(token, reminders_enabled="off")
        )
        assert answer.status_code == 303, answer.text
        (new,) = site.configs.published
        assert new.reminders_enabled is False and new.version == 4
        after = await client.get(answer.headers["location"])
        assert "Opgeslagen" in after.text and "version" in after.text
    async with session_factory(site.engine)() as session:
        (entry,) = (await session.execute(select(AuditEntry))).scalars().all()
    assert entry.actor == BEHEERDER and entry.practice_id == P1 and entry.version == 4
    assert json.loads(entry.fields) == ["reminders_enabled"]
    assert entry.at == START


async def test_switching_on_without_a_phone_is_refused_beside_the_field(site: Site) -> None:
    site.configs.rows[P1] = practice(P1, reminders_enabled=False, phone=None)
    async with site.client() as client:
        token = await _beheerder(site, client)
        answer = await client.post(
            f"/praktijk/{P1}/instellingen", data=settings_form(token, phone="")
        )
    assert answer.status_code == 422
    assert 'id="phone-error"' in answer.text
    assert 'aria-describedby="phone-hint phone-error" aria-invalid="true"' in answer.text
    assert "phone is required when reminders are on" in answer.text
    assert site.configs.published == []


async def test_bad_values_are_shown_beside_their_fields(site: Site) -> None:
    async with site.client() as client:
        token = await _beheerder(site, client)
        answer = await client.post(
            f"/praktijk/{P1}/instellingen",
            data=settings_form(token, sender_email="not-an-address", send_hours="veel"),
        )
    assert answer.status_code == 422
    assert 'id="send_hours-error"' in answer.text and "Vul een getal in" in answer.text
    answer2_value = 'value="not-an-address"'
    assert answer2_value in answer.text  # the form keeps what was typed


async def test_a_save_made_on_an_older_version_is_refused(site: Site) -> None:
    async with site.client() as client:
        token = await _beheerder(site, client)
        # Someone else saved in the meantime: version 4 is in force.
        site.configs.rows[P1] = practice(P1, version=4)
        answer = await client.post(
            f"/praktijk/{P1}/instellingen", data=settings_form(token, name="Nieuwe naam")
        )
    assert answer.status_code == 409 and "versie 4" in answer.text
    assert site.configs.published == []


def _png(size: tuple[int, int] = (40, 20), noise: bool = False) -> bytes:
    image = Image.new("RGB", size, (26, 110, 92))
    if noise:
        pixels = random.Random(7).randbytes(size[0] * size[1] * 3)
        image = Image.frombytes("RGB", size, pixels)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def test_a_logo_is_re_encoded_and_anything_but_png_or_jpeg_is_refused(site: Site) -> None:
    svg = b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'
    html = b"<!doctype html><html><script>alert(1)</script></html>"
    fake_png = b"\x89PNG\r\n\x1a\n" + b"<html><script>alert(1)</script></html>"
    big = _png((400, 400), noise=True)
    assert len(big) > 100 * 1024
    async with site.client() as client:
        token = await _beheerder(site, client)
        for name, data, kind in (
            ("logo.svg", svg, "image/svg+xml"),
            ("logo.png", html, "image/png"),
            ("logo.png", fake_png, "image/png"),
            ("logo.png", big, "image/png"),
        ):
            answer = await client.post(
                f"/praktijk/{P1}/instellingen",
                data=settings_form(token),
                files={"logo": (name, data, kind)},
            )
            assert answer.status_code == 422, name
            assert 'id="logo-error"' in answer.text
        assert site.configs.published == []
        good = _png() + b"trailing data a polyglot would hide"
        answer = await client.post(
            f"/praktijk/{P1}/instellingen",
            data=settings_form(token),
            files={"logo": ("logo.png", good, "image/png")},
        )
        assert answer.status_code == 303, answer.text
    (new,) = site.configs.published
    assert new.branding.logo is not None
    stored = base64.b64decode(new.branding.logo)
    assert stored.startswith(b"\x89PNG") and b"polyglot" not in stored


def _chunk(kind: bytes, data: bytes, *, crc: int | None = None) -> bytes:
    checksum = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)


_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IHDR = _chunk(b"IHDR", struct.pack(">IIBBBBB", 4, 4, 8, 2, 0, 0, 0))
_PALETTE_IHDR = _chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 1, 3, 0, 0, 0))
_IDAT = _chunk(b"IDAT", zlib.compress((b"\x00" + b"\x01" * 12) * 4))
_IEND = _chunk(b"IEND", b"")
# Pillow answers each of these with another exception (SyntaxError, IndexError,
# UnboundLocalError, OSError, ...), none of them one an upload route expects.
BROKEN_PNGS = {
    "truncated IHDR": _SIGNATURE + _IHDR[:12],
    "IDAT with a bad checksum": _SIGNATURE + _IHDR + _chunk(b"IDAT", b"x", crc=0) + _IEND,
    "a chunk length past the end": _SIGNATURE + _IHDR + struct.pack(">I", 2**31 - 1) + b"IDAT",
    "garbage where a chunk should be": _SIGNATURE + _IHDR + _IDAT + b"\xff" * 20,
    "no IDAT at all": _SIGNATURE + _PALETTE_IHDR + _chunk(b"PLTE", b"\x00" * 3) + _IEND,
    "a palette image without PLTE": _SIGNATURE
    + _PALETTE_IHDR
    + _chunk(b"IDAT", zlib.compress(b"\x00\x00" * 8))
    + _IEND,
}


@pytest.mark.parametrize("name", list(BROKEN_PNGS))
async def test_a_broken_png_is_refused_beside_the_field(site: Site, name: str) -> None:
    async with site.client() as client:
        token = await _beheerder(site, client)
        answer = await client.post(
            f"/praktijk/{P1}/instellingen",
            data=settings_form(token),
            files={"logo": ("logo.png", BROKEN_PNGS[name], "image/png")},
        )
    assert answer.status_code == 422, name
    assert 'id="logo-error"' in answer.text
    assert "Dit bestand is geen PNG- of JPEG-afbeelding." in answer.text
    assert site.configs.published == []


async def test_a_png_that_claims_too_many_pixels_is_refused_as_such(site: Site) -> None:
    # 20000 x 20000: past Pillow's own decompression-bomb limit, refused as it opens.
    bomb = _SIGNATURE + _chunk(b"IHDR", struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0))
    async with site.client() as client:
        token = await _beheerder(site, client)
        answer = await client.post(
            f"/praktijk/{P1}/instellingen",
            data=settings_form(token),
            files={"logo": ("logo.png", bomb + _IDAT + _IEND, "image/png")},
        )
    assert answer.status_code == 422
    assert "Het logo heeft te veel pixels" in answer.text
    assert site.configs.published == []


async def test_texts_are_saved_and_the_preview_follows_the_unsaved_form(site: Site) -> None:
    async with site.client() as client:
        await sign_in(client, site.mailer, BEHEERDER)
        page = await client.get(f"/praktijk/{P1}/teksten")
        token = csrf_of(page.text)
        assert 'value="Consult 10 minuten"' in page.text
        form = {
            "csrf_token": token,
            "version": "3",
            "code": "C10",
            "label": "Consult 10 minuten",
            "with_whom": "de huisarts",
            "instructions": "Neem uw nieuwe pas mee.",
            "preview_lang": "nl",
        }
        preview = await client.post(f"/praktijk/{P1}/teksten/voorbeeld", data=form)
        assert preview.status_code == 200
        assert "Neem uw nieuwe pas mee." in preview.text
        assert "Bel dan de praktijk: 020-1234567" in preview.text
        assert "frame-ancestors 'self'" in preview.headers["content-security-policy"]
        assert preview.headers["x-frame-options"] == "SAMEORIGIN"
        english = await client.post(
            f"/praktijk/{P1}/teksten/voorbeeld", data={**form, "preview_lang": "en"}
        )
        assert "call the practice" in english.text.lower()
        assert site.configs.published == []
        test = await client.post(f"/praktijk/{P1}/teksten/test", data=form)
        assert test.status_code == 200 and "eigen e-mailadres" in test.text
        assert site.mailer.sent[-1]["To"] == BEHEERDER
        saved = await client.post(f"/praktijk/{P1}/teksten", data=form)
        assert saved.status_code == 303
    (new,) = site.configs.published
    assert new.appointment_types["C10"].instructions == "Neem uw nieuwe pas mee."


async def test_a_template_that_does_not_compile_is_refused_beside_its_field(site: Site) -> None:
    async with site.client() as client:
        await sign_in(client, site.mailer, BEHEERDER)
        token = csrf_of((await client.get(f"/praktijk/{P1}/teksten")).text)
        answer = await client.post(
            f"/praktijk/{P1}/teksten",
            data={
                "csrf_token": token,
                "version": "3",
                "code": "C10",
                "label": "Consult",
                "tpl_nl_subject": "Afspraak {{ patient.bsn }}",
            },
        )
    assert answer.status_code == 422
    assert 'id="tpl_nl_subject-error"' in answer.text or 'id="general' not in answer.text
    assert site.configs.published == []


async def test_a_template_that_divides_by_zero_is_refused_in_preview_and_save(
    site: Site,
) -> None:
    async with site.client() as client:
        await sign_in(client, site.mailer, BEHEERDER)
        token = csrf_of((await client.get(f"/praktijk/{P1}/teksten")).text)
        form = {
            "csrf_token": token,
            "version": "3",
            "code": "C10",
            "label": "Consult",
            "tpl_nl_subject": "Afspraak {{ 1 is divisibleby 0 }}",
            "preview_lang": "nl",
        }
        preview = await client.post(f"/praktijk/{P1}/teksten/voorbeeld", data=form)
        assert preview.status_code == 200
        assert 'class="problem"' in preview.text and "fails to render" in preview.text
        test = await client.post(f"/praktijk/{P1}/teksten/test", data=form)
        assert test.status_code == 422 and "fails to render" in test.text
        saved = await client.post(f"/praktijk/{P1}/teksten", data=form)
        assert saved.status_code == 422
        assert 'id="tpl_nl_subject-error"' in saved.text and "fails to render" in saved.text
    assert site.configs.published == []
    assert (
        site.mailer.sent[-1]["To"] == BEHEERDER
        and "inlogcode" in site.mailer.sent[-1]["Subject"].lower()
    )


async def test_the_meeting_box_says_why_a_text_counts_as_a_meeting(site: Site) -> None:
    async with site.client() as client:
        await sign_in(client, site.mailer, MEDEWERKER)
        yes = await client.get(f"/praktijk/{P1}/overleggen", params={"probeer": "Teamoverleg POH"})
        assert "Telt als overleg: ja, door trefwoord <strong>overleg</strong>" in yes.text
        no = await client.get(f"/praktijk/{P1}/overleggen", params={"probeer": "Uitstrijkje"})
        assert "Telt als overleg: nee" in no.text


async def test_meeting_rules_are_saved(site: Site) -> None:
    async with site.client() as client:
        await sign_in(client, site.mailer, BEHEERDER)
        token = csrf_of((await client.get(f"/praktijk/{P1}/overleggen")).text)
        answer = await client.post(
            f"/praktijk/{P1}/overleggen",
            data={
                "csrf_token": token,
                "version": "3",
                "keywords": "teamtijd\nmoc",
                "agenda_ids": "AG-MDO",
            },
        )
        assert answer.status_code == 303
        after = await client.get(f"/praktijk/{P1}/overleggen", params={"probeer": "Teamtijd"})
        assert "Telt als overleg: ja" in after.text
    (new,) = site.configs.published
    assert new.meeting_rules.keywords == ["teamtijd", "moc"]
    assert new.meeting_rules.agenda_ids == ["AG-MDO"]


async def test_the_send_log_shows_reasons_in_plain_dutch_and_filters(site: Site) -> None:
    at = START - timedelta(hours=2)
    rows = [
        LogRow(
            at, START + timedelta(days=1), "A1", "Consult", "pt-1", "suppressed", "no_consent", None
        ),
        LogRow(
            at,
            START + timedelta(days=1),
            "A2",
            "Consult",
            "pt-2",
            "suppressed",
            "patient_discussion",
            None,
        ),
        LogRow(at - timedelta(days=1), START, "A3", "Consult", "pt-3", "sent", None, "email"),
    ]
    async with site.client() as client:
        await sign_in(client, site.mailer, MEDEWERKER)
        follow = await client.get(f"/praktijk/{P1}/follow-up")
        assert "Nog geen gegevens" in follow.text  # nothing projected yet
        scheduled = [Scheduled(START + timedelta(hours=3), "A9", "C10")]
        await project_log(site.engine, P1, rows, scheduled)
        log = await client.get(f"/praktijk/{P1}/verzendlog")
        assert "geen toestemming van de patiënt" in log.text
        assert "overleg over de patiënt: niet verstuurd" in log.text
        assert "pt-3" in log.text and "E-mail" in log.text
        sent = await client.get(f"/praktijk/{P1}/verzendlog", params={"uitkomst": "sent"})
        assert "pt-3" in sent.text and "pt-1" not in sent.text
        day = (at - timedelta(days=1)).astimezone(UTC).date().isoformat()
        by_day = await client.get(f"/praktijk/{P1}/verzendlog", params={"dag": day})
        assert "pt-3" in by_day.text and "pt-2" not in by_day.text
        overview = await client.get(f"/praktijk/{P1}/")
        assert "Consult 10 minuten" in overview.text  # the scheduled appointment's type
        assert "overleg over de patiënt: niet verstuurd" in overview.text
        follow = await client.get(f"/praktijk/{P1}/follow-up")
        assert "Nog geen gegevens" not in follow.text  # the same rows feed the follow-up


@pytest.mark.parametrize("day", ["9999-12-31", "0001-01-01", "1999-12-30", "2100-01-01"])
async def test_a_send_log_day_outside_the_years_of_any_reminder_is_refused_with_a_message(
    site: Site, day: str
) -> None:
    async with site.client() as client:
        await sign_in(client, site.mailer, MEDEWERKER)
        log = await client.get(f"/praktijk/{P1}/verzendlog", params={"dag": day})
    assert log.status_code == 422
    assert 'id="dag-error"' in log.text and "Kies een dag van 2000 tot en met 2099" in log.text
    assert 'aria-describedby="dag-error"' in log.text


@pytest.mark.parametrize("day", [date.min, date.max, date(1999, 12, 31), date(2100, 1, 1)])
async def test_the_send_log_query_takes_any_day(site: Site, day: date) -> None:
    # The first and the last day a date can be: no day range to overflow, no rows either.
    await project_log(
        site.engine,
        P1,
        [LogRow(START, START, "A1", "Consult", "pt-1", "sent", None, "email")],
    )
    for zone in (ZoneInfo("Europe/Amsterdam"), ZoneInfo("Pacific/Kiritimati")):
        page = await site.outcomes.log(P1, day=day, zone=zone)
        assert page.rows == [] and page.total == 0


async def test_english_is_switchable(site: Site) -> None:
    async with site.client() as client:
        await sign_in(client, site.mailer, BEHEERDER)
        page = await client.get(f"/praktijk/{P1}/")
        switched = await client.post(
            "/taal",
            data={"csrf_token": csrf_of(page.text), "lang": "en", "next": f"/praktijk/{P1}/"},
        )
        assert switched.status_code == 303
        english = await client.get(f"/praktijk/{P1}/")
        assert 'lang="en"' in english.text and "Reminders are ON" in english.text


# --------------------------------------------------------------------------- headers


async def test_security_headers_on_every_page(site: Site) -> None:
    async with site.client() as client:
        for url in ("/login", "/healthz"):
            answer = await client.get(url)
            csp = answer.headers["content-security-policy"]
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
            assert "http" not in csp and "*" not in csp and "unsafe-inline" not in csp
            assert answer.headers["x-frame-options"] == "DENY"
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["referrer-policy"] == "no-referrer"
        await sign_in(client, site.mailer, BEHEERDER)
        page = await client.get(f"/praktijk/{P1}/teksten")
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"
        assert 'sandbox src="about:blank"' in page.text


async def test_health_readiness_and_metrics(site: Site) -> None:
    async with site.client() as client:
        assert (await client.get("/healthz")).json()["status"] == "alive"
        assert (await client.get("/readyz")).status_code == 200
        metrics = await client.get("/metrics")
        assert "practice_admin_signins_total" in metrics.text


async def test_a_new_appointment_type_is_added_with_its_own_template(site: Site) -> None:
    async with site.client() as client:
        await sign_in(client, site.mailer, BEHEERDER)
        page = await client.get(f"/praktijk/{P1}/teksten", params={"nieuw": "1"})
        assert page.status_code == 200 and 'id="code"' in page.text
        form = {
            "csrf_token": csrf_of(page.text),
            "version": "3",
            "code": "OREN",
            "label": "Oren uitspuiten",
            "with_whom": "de assistente",
            "tpl_nl_subject": "Uw afspraak: {{ label }} op {{ date_text }}",
            "preview_lang": "nl",
        }
        preview = await client.post(f"/praktijk/{P1}/teksten/voorbeeld", data=form)
        assert "Uw afspraak: Oren uitspuiten op" in preview.text
        saved = await client.post(f"/praktijk/{P1}/teksten", data=form)
        assert saved.status_code == 303
        assert saved.headers["location"].endswith("teksten?type=OREN&opgeslagen=1")
    (new,) = site.configs.published
    assert new.appointment_types["OREN"].label == "Oren uitspuiten"
    assert new.templates["OREN"]["nl"].subject == "Uw afspraak: {{ label }} op {{ date_text }}"


@pytest.mark.parametrize("code", ["X&opgeslagen=0", "Y#z", "a+b", "a b", "é"])
async def test_the_redirect_after_saving_a_text_keeps_the_type_code_whole(
    site: Site, code: str
) -> None:
    async with site.client() as client:
        await sign_in(client, site.mailer, BEHEERDER)
        token = csrf_of((await client.get(f"/praktijk/{P1}/teksten")).text)
        saved = await client.post(
            f"/praktijk/{P1}/teksten",
            data={"csrf_token": token, "version": "3", "code": code, "label": "Eigen type"},
        )
        assert saved.status_code == 303
        after = await client.get(saved.headers["location"])
    assert httpx.URL(saved.headers["location"]).params.get_list("type") == [code]
    assert after.status_code == 200 and 'value="Eigen type"' in after.text


async def test_the_csrf_cookie_is_deleted_with_the_flags_it_was_set_with(site: Site) -> None:
    site.pages.secure_cookies = True
    transport = httpx.ASGITransport(app=build_app(site.pages), client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="https://testserver") as client:
        answer = await sign_in(client, site.mailer, BEHEERDER)
    deleted = [c for c in answer.headers.get_list("set-cookie") if c.startswith("pa_csrf=")]
    (cookie,) = deleted
    flags = cookie.lower()
    assert "max-age=0" in flags
    assert "httponly" in flags and "secure" in flags and "samesite=lax" in flags
    assert "path=/" in flags


async def test_a_file_part_is_refused_before_it_is_written_except_for_the_logo(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sign-in form is read before the CSRF check, by anyone: a file part there (or on
    any form but the logo's) is refused at its headers, never spooled to disk."""
    import starlette.formparsers

    spooled: list[object] = []
    real = starlette.formparsers.SpooledTemporaryFile

    def counting(*args: object, **kwargs: object) -> object:
        spooled.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(starlette.formparsers, "SpooledTemporaryFile", counting)
    upload = {"junk": ("x.bin", b"\0" * 300_000, "application/octet-stream")}
    async with site.client() as client:
        page = await client.get("/login")
        answer = await client.post(
            "/login", data={"email": BEHEERDER, "csrf_token": csrf_of(page.text)}, files=upload
        )
        assert answer.status_code == 400
        assert spooled == []
        assert site.mailer.sent == []
        token = await _beheerder(site, client)
        answer = await client.post(
            f"/praktijk/{P1}/overleggen", data={"csrf_token": token}, files=upload
        )
        assert answer.status_code == 400 and spooled == []
        # The logo's form still takes its one file.
        answer = await client.post(
            f"/praktijk/{P1}/instellingen",
            data=settings_form(token),
            files={"logo": ("logo.png", _png(), "image/png")},
        )
        assert answer.status_code == 303 and len(spooled) == 1
    assert site.configs.published[-1].branding.logo is not None


async def test_a_phone_photo_logo_is_stored_upright_and_shown_as_the_jpeg_it_is(
    site: Site,
) -> None:
    """A JPEG 60 wide and 20 high whose EXIF says 'turn 90 degrees' (orientation 6, what
    phones write) is shown 20 wide and 60 high; re-encoding drops the EXIF, so the pixels
    themselves are turned. The settings page names it image/jpeg."""
    image = Image.new("RGB", (60, 20), (26, 110, 92))
    exif = Image.Exif()
    exif[0x0112] = 6
    out = io.BytesIO()
    image.save(out, format="JPEG", exif=exif)
    async with site.client() as client:
        token = await _beheerder(site, client)
        answer = await client.post(
            f"/praktijk/{P1}/instellingen",
            data=settings_form(token),
            files={"logo": ("foto.jpg", out.getvalue(), "image/jpeg")},
        )
        assert answer.status_code == 303, answer.text
        (new,) = site.configs.published
        assert new.branding.logo is not None
        with Image.open(io.BytesIO(base64.b64decode(new.branding.logo))) as stored:
            assert stored.format == "JPEG"
            assert stored.size == (20, 60)
            assert stored.getexif().get(0x0112) in (None, 1)
        page = await client.get(f"/praktijk/{P1}/instellingen")
        assert 'src="data:image/jpeg;base64,' in page.text


async def test_a_body_over_a_megabyte_is_refused_before_it_is_read(site: Site) -> None:
    """Signed in or not, declared or chunked: 413 with the site's own page, nothing parsed,
    nothing published. A logo (at most 100 kB) is far below the limit."""
    big = b"x" * (MAX_BODY_BYTES + 1)
    async with site.client() as client:
        page = await client.get("/login")
        data = {"email": BEHEERDER, "csrf_token": csrf_of(page.text), "pad": big.decode()}
        answer = await client.post("/login", data=data)
        assert answer.status_code == 413
        assert "te groot" in answer.text
        assert site.mailer.sent == []
        token = await _beheerder(site, client)

        # A logo part of 1.3 MB, chunked (no Content-Length): counted as it comes.
        head = (
            b'--b\r\nContent-Disposition: form-data; name="csrf_token"\r\n\r\n'
            + token.encode()
            + b'\r\n--b\r\nContent-Disposition: form-data; name="logo"; filename="l.png"'
            b"\r\nContent-Type: image/png\r\n\r\n"
        )

        async def chunks() -> AsyncIterator[bytes]:
            yield head
            for _ in range(20):
                yield b"y" * 65536
            yield b"\r\n--b--\r\n"

        answer = await client.post(
            f"/praktijk/{P1}/instellingen",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=b"},
        )
        assert answer.status_code == 413
        assert site.configs.published == []
        # An ordinary form, with a logo, still goes through.
        answer = await client.post(
            f"/praktijk/{P1}/instellingen",
            data=settings_form(token),
            files={"logo": ("logo.png", _png(), "image/png")},
        )
        assert answer.status_code == 303
    assert len(site.configs.published) == 1

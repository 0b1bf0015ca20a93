"""The beheeromgeving's routes: sign-in, the practice pages, health and metrics.

Server-rendered (Jinja2, autoescape), usable without JavaScript. Every POST handler
reads its form through :meth:`Pages.form`, which checks the CSRF token first; every
practice page goes through :meth:`Pages.member`, which answers 404 for a practice the
user does not belong to (never a hint that it exists), and saves through
:meth:`Pages.beheerder`, which refuses a medewerker.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, PlainTextResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.models import INSTANT_RANGE, PracticeConfig
from services.common.clock import Clock
from services.common.followup import CHARTS, Figure, Report, build_report, chart_svg, report_csv
from services.common.practice_config import ConfigRejected, validate_practice_config
from services.domain.branding import practice_logo
from services.domain.classify import DEFAULT_KEYWORDS, classify
from services.domain.render import (
    RenderedReminder,
    TemplateRejected,
    render_reminder,
    sample_appointment,
    urgent_line,
)
from services.practice_admin import forms
from services.practice_admin.config_store import ConfigSource, VersionConflict
from services.practice_admin.i18n import LANGUAGES, REASONS, translator
from services.practice_admin.logo import LogoRefused, clean_logo
from services.practice_admin.mailer import SmtpMailer
from services.practice_admin.models import AuditEntry
from services.practice_admin.outcomes import OutcomeSource
from services.practice_admin.security import (
    CSRF_COOKIE,
    CSRF_FIELD,
    PREVIEW_CSP,
    SESSION_COOKIE,
    check_csrf,
    new_csrf_cookie_value,
    security_headers,
)
from services.practice_admin.signin import Signed, SignIn

__all__ = ["Pages", "build_app"]

log = logging.getLogger(__name__)

_HERE = Path(__file__).resolve().parent
LANG_COOKIE = "pa_lang"

SAVES = Counter(
    "practice_admin_saves_total", "Config saves from the beheeromgeving", ["page", "result"]
)
SIGNINS = Counter("practice_admin_signins_total", "Sign-in steps", ["step", "result"])


@dataclass
class Pages:
    """Everything the routes need, built once per process (tests build their own)."""

    sessions: async_sessionmaker[AsyncSession]
    signin: SignIn
    configs: ConfigSource
    outcomes: OutcomeSource
    mailer: SmtpMailer
    clock: Clock
    secure_cookies: bool
    idle_minutes: int
    code_minutes: int
    demo: bool = False
    ready_checks: list[Any] = field(default_factory=list)
    templates: Jinja2Templates = field(
        default_factory=lambda: Jinja2Templates(directory=str(_HERE / "templates"))
    )

    # ------------------------------------------------------------------ helpers
    def lang(self, request: Request) -> str:
        value = request.cookies.get(LANG_COOKIE)
        return value if value in LANGUAGES else "nl"

    async def current(self, request: Request) -> Signed | None:
        return await self.signin.session_for(request.cookies.get(SESSION_COOKIE), self.clock.now())

    async def form(self, request: Request, signed: Signed | None, *, files: int = 0) -> FormData:
        # A file part is refused (400) at its headers, before anything is written to disk,
        # on every form but the one that takes a logo: the sign-in form is read before
        # the CSRF check, by anyone.
        form = await request.form(max_files=files, max_fields=200, max_part_size=200 * 1024)
        request.state.form = form  # closed (uploads and all) after the response
        expected = signed.csrf_token if signed is not None else request.cookies.get(CSRF_COOKIE)
        check_csrf(form, expected)
        return form

    async def member(self, request: Request, practice_id: str) -> Signed:
        signed = await self.current(request)
        if signed is None:
            raise _SignInFirst()
        if practice_id not in signed.memberships:
            raise HTTPException(status_code=404)
        return signed

    def beheerder(self, signed: Signed, practice_id: str) -> None:
        if signed.memberships.get(practice_id) != "beheerder":
            raise HTTPException(status_code=403)

    def render(
        self,
        request: Request,
        name: str,
        context: dict[str, Any],
        *,
        signed: Signed | None = None,
        status_code: int = 200,
        csrf: str | None = None,
    ) -> HTMLResponse:
        lang = self.lang(request)
        practice_id = context.get("practice_id")
        role = signed.memberships.get(practice_id) if signed and practice_id else None
        full = {
            "lang": lang,
            "t": translator(lang),
            "signed": signed,
            "role": role,
            "csrf_field": CSRF_FIELD,
            "csrf": signed.csrf_token if signed is not None else csrf,
            "path": request.url.path,
            **context,
        }
        return self.templates.TemplateResponse(request, name, full, status_code=status_code)

    def anonymous_csrf(self, request: Request) -> tuple[str, bool]:
        value = request.cookies.get(CSRF_COOKIE)
        if value and 20 <= len(value) <= 100:
            return value, False
        return new_csrf_cookie_value(), True

    def set_cookie(self, response: Response, name: str, value: str, max_age: int | None) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            httponly=True,
            secure=self.secure_cookies,
            samesite="lax",
            path="/",
        )

    def delete_cookie(self, response: Response, name: str) -> None:
        """Deleted with the flags it was set with (:meth:`set_cookie`)."""
        response.delete_cookie(
            name, httponly=True, secure=self.secure_cookies, samesite="lax", path="/"
        )

    async def audit(
        self, practice_id: str, actor: str, action: str, fields_: list[str], version: int
    ) -> None:
        async with self.sessions.begin() as session:
            session.add(
                AuditEntry(
                    at=self.clock.now(),
                    practice_id=practice_id,
                    actor=actor,
                    action=action,
                    fields=json.dumps(fields_),
                    version=version,
                )
            )


class _SignInFirst(Exception):
    pass


# --------------------------------------------------------------------------- the app


async def _close_forms(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    try:
        return await call_next(request)
    finally:
        form = getattr(request.state, "form", None)
        if form is not None:
            await form.close()


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _base(config: PracticeConfig | None, practice_id: str) -> dict[str, Any]:
    if config is None:
        return {"practice_id": practice_id, "name": practice_id}
    data: dict[str, Any] = config.model_dump(mode="json")
    return data


def _version_of(form: FormData) -> int | None:
    value = form.get("version")
    if not isinstance(value, str) or value in ("", "none"):
        return None
    try:
        return int(value)
    except ValueError:
        return -1


def _hhmm(value: Any) -> str:
    return str(value)[:5] if value else ""


# No form of the beheeromgeving comes near this (a logo is at most 100 kB): a bigger body
# is refused before it is parsed, let alone spooled to disk.
MAX_BODY_BYTES = 1024 * 1024


class _BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes is answered 413 by the app's
    own error page, by Content-Length at the first read or by counting a chunked body."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        limit = self.limit
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            if len(declared) > 12 or not declared.isdigit() or int(declared) > limit:
                raise StarletteHTTPException(status_code=413)
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise StarletteHTTPException(status_code=413)
            return message

        await self.app(scope, limited, send)


def build_app(pages: Pages) -> FastAPI:
    app = FastAPI(
        title="practice-admin",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_middleware(_BodyLimit)
    app.middleware("http")(_close_forms)
    app.middleware("http")(security_headers)
    app.mount("/static", StaticFiles(directory=str(_HERE / "static")), name="static")

    @app.exception_handler(_SignInFirst)
    async def _to_login(request: Request, exc: _SignInFirst) -> Response:
        return RedirectResponse("/login", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def _error(request: Request, exc: StarletteHTTPException) -> Response:
        signed = None
        if exc.status_code != 403 or exc.detail != "csrf":
            signed = await pages.current(request)
        return pages.render(
            request,
            "error.html",
            {"status": exc.status_code, "detail": exc.detail},
            signed=signed,
            status_code=exc.status_code,
        )

    # ------------------------------------------------------------------ health
    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "alive", "service": "practice-admin"}

    @app.get("/readyz")
    async def readyz() -> Response:
        details = {
            "configs": pages.configs.ready(),
            "outcomes": pages.outcomes.ready(),
        }
        ready = all(details.values())
        body = json.dumps({"ready": ready, "service": "practice-admin", **details})
        return Response(body, status_code=200 if ready else 503, media_type="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    # ------------------------------------------------------------------ sign-in
    @app.get("/")
    async def home(request: Request) -> Response:
        signed = await pages.current(request)
        if signed is None:
            return RedirectResponse("/login", status_code=303)
        if len(signed.memberships) == 1:
            (only,) = signed.memberships
            return RedirectResponse(f"/praktijk/{only}/", status_code=303)
        names = {p: (c.name if (c := pages.configs.get(p)) else p) for p in signed.memberships}
        return pages.render(request, "home.html", {"names": names}, signed=signed)

    def login_page(
        request: Request, template: str, context: dict[str, Any], status: int = 200
    ) -> Response:
        token, fresh = pages.anonymous_csrf(request)
        response = pages.render(request, template, context, csrf=token, status_code=status)
        if fresh:
            pages.set_cookie(response, CSRF_COOKIE, token, None)
        return response

    @app.get("/login")
    async def login(request: Request) -> Response:
        if await pages.current(request) is not None:
            return RedirectResponse("/", status_code=303)
        return login_page(request, "login.html", {"errors": {}, "email": ""})

    @app.post("/login")
    async def login_post(request: Request) -> Response:
        form = await pages.form(request, None)
        email = str(form.get("email") or "").strip()
        t = translator(pages.lang(request))
        if not email or "@" not in email or len(email) > 254:
            return login_page(
                request,
                "login.html",
                {"errors": {"email": [t("email_invalid")]}, "email": email},
                422,
            )
        result = await pages.signin.request_code(email, _client_ip(request), pages.clock.now())
        if result.limited:
            SIGNINS.labels("code", "limited").inc()
            return login_page(
                request,
                "login.html",
                {"errors": {"email": [t("rate_limited")]}, "email": email},
                429,
            )
        if result.code is not None and result.email is not None:
            await _send_code(pages, result.email, result.code, pages.lang(request))
        SIGNINS.labels("code", "requested").inc()
        return login_page(request, "code.html", {"errors": {}, "email": email})

    @app.post("/login/code")
    async def code_post(request: Request) -> Response:
        form = await pages.form(request, None)
        email = str(form.get("email") or "").strip()
        code = str(form.get("code") or "")
        t = translator(pages.lang(request))
        user_id = await pages.signin.verify_code(
            email, code, _client_ip(request), pages.clock.now()
        )
        if user_id is None:
            SIGNINS.labels("verify", "refused").inc()
            return login_page(
                request, "code.html", {"errors": {"code": [t("code_wrong")]}, "email": email}, 422
            )
        SIGNINS.labels("verify", "ok").inc()
        token = await pages.signin.start_session(user_id, pages.clock.now())
        response = RedirectResponse("/", status_code=303)
        pages.set_cookie(response, SESSION_COOKIE, token, None)
        pages.delete_cookie(response, CSRF_COOKIE)
        return response

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        signed = await pages.current(request)
        await pages.form(request, signed)
        await pages.signin.end_session(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", status_code=303)
        pages.delete_cookie(response, SESSION_COOKIE)
        return response

    @app.post("/taal")
    async def language(request: Request) -> Response:
        signed = await pages.current(request)
        form = await pages.form(request, signed)
        lang = str(form.get("lang") or "nl")
        target = str(form.get("next") or "/")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        response = RedirectResponse(target, status_code=303)
        pages.set_cookie(response, LANG_COOKIE, lang if lang in LANGUAGES else "nl", 365 * 86400)
        return response

    # ------------------------------------------------------------------ overview
    @app.get("/praktijk/{practice_id}")
    async def practice_root(request: Request, practice_id: str) -> Response:
        await pages.member(request, practice_id)
        return RedirectResponse(f"/praktijk/{practice_id}/", status_code=303)

    @app.get("/praktijk/{practice_id}/")
    async def overview(request: Request, practice_id: str) -> Response:
        signed = await pages.member(request, practice_id)
        config = pages.configs.get(practice_id)
        now = pages.clock.now()
        labels = _labels(config)
        upcoming = await pages.outcomes.upcoming(practice_id, now, 24)
        week = await pages.outcomes.week(practice_id, now - timedelta(days=7))
        zone = ZoneInfo(config.timezone if config else "Europe/Amsterdam")
        return pages.render(
            request,
            "overview.html",
            {
                "practice_id": practice_id,
                "config": config,
                "upcoming": upcoming,
                "labels": labels,
                "week": week,
                "reasons": REASONS[pages.lang(request)],
                "zone": zone,
            },
            signed=signed,
        )

    # ------------------------------------------------------------------ instellingen
    def settings_context(config: PracticeConfig | None, practice_id: str) -> dict[str, Any]:
        data = _base(config, practice_id)
        send = data.get("send") or {"policy": "hours_before", "hours": 24}
        quiet = data.get("quiet_hours")
        branding = data.get("branding") or {}
        sender = data.get("sender") or {}
        return {
            "values": {
                "name": data.get("name", ""),
                "phone": data.get("phone") or "",
                "reminders_enabled": "on" if data.get("reminders_enabled") else "off",
                "send_policy": send.get("policy", "hours_before"),
                "send_hours": send.get("hours", 24),
                "send_time": _hhmm(send.get("time", "18:00")),
                "quiet_enabled": "on" if quiet else "",
                "quiet_start": _hhmm(quiet["start"]) if quiet else "21:00",
                "quiet_end": _hhmm(quiet["end"]) if quiet else "08:00",
                "channel_email": "on" if "email" in data.get("channels", ["email", "push"]) else "",
                "channel_push": "on" if "push" in data.get("channels", ["email", "push"]) else "",
                "sender_email": sender.get("email", ""),
                "sender_name": sender.get("name", ""),
                "accent_color": branding.get("accent_color", "#1a6e5c"),
            },
            "logo": branding.get("logo"),
            "logo_type": "image/"
            + (logo.subtype if config is not None and (logo := practice_logo(config)) else "png"),
            "version": config.version if config is not None else "none",
        }

    @app.get("/praktijk/{practice_id}/instellingen")
    async def instellingen(request: Request, practice_id: str) -> Response:
        signed = await pages.member(request, practice_id)
        config = pages.configs.get(practice_id)
        saved = request.query_params.get("opgeslagen")
        return pages.render(
            request,
            "instellingen.html",
            {
                "practice_id": practice_id,
                "config": config,
                "errors": {},
                "saved": saved,
                **settings_context(config, practice_id),
            },
            signed=signed,
        )

    @app.post("/praktijk/{practice_id}/instellingen")
    async def instellingen_post(request: Request, practice_id: str) -> Response:
        signed = await pages.member(request, practice_id)
        form = await pages.form(request, signed, files=1)
        pages.beheerder(signed, practice_id)
        t = translator(pages.lang(request))
        current = pages.configs.get(practice_id)
        logo: str | None = None
        errors: forms.FormErrors = {}
        upload = form.get("logo")
        if isinstance(upload, UploadFile) and upload.filename:
            raw = await upload.read(100 * 1024 + 1)
            try:
                logo = clean_logo(raw)
            except LogoRefused as exc:
                errors["logo"] = [t(exc.reason)]
        data, form_errors = forms.settings_update(
            _base(current, practice_id), form, logo, form.get("logo_remove") == "on"
        )
        for key, messages in form_errors.items():
            errors.setdefault(key, []).extend(t(m) for m in messages)

        def again(status: int, extra: dict[str, Any] | None = None) -> Response:
            context = settings_context(current, practice_id)
            context["values"].update({k: v for k, v in form.items() if isinstance(v, str)})
            for box in ("quiet_enabled", "channel_email", "channel_push"):
                context["values"][box] = form.get(box) or ""
            return pages.render(
                request,
                "instellingen.html",
                {
                    "practice_id": practice_id,
                    "config": current,
                    "errors": errors,
                    "saved": None,
                    **context,
                    **(extra or {}),
                },
                signed=signed,
                status_code=status,
            )

        if errors:
            SAVES.labels("instellingen", "invalid").inc()
            return again(422)
        return await _save(
            pages,
            request,
            signed,
            practice_id,
            "instellingen",
            current,
            data,
            form,
            again,
            forms.errors_by_field,
            errors,
        )

    # ------------------------------------------------------------------ teksten
    def texts_context(
        config: PracticeConfig | None, code: str | None, practice_id: str
    ) -> dict[str, Any]:
        values: dict[str, str] = {
            "code": code or "",
            "label": "",
            "with_whom": "",
            "instructions": "",
            "preview_lang": "nl",
        }
        if config is not None and code:
            text = config.appointment_types.get(code)
            if text is not None:
                values.update(
                    label=text.label, with_whom=text.with_whom, instructions=text.instructions
                )
            for language, tpl in (config.templates.get(code) or {}).items():
                for part in forms.TEMPLATE_PARTS:
                    value = getattr(tpl, part)
                    if value:
                        values[f"tpl_{language}_{part}"] = value
        return {
            "types": sorted((config.appointment_types if config else {}).items()),
            "code": code,
            "values": values,
            "version": config.version if config is not None else "none",
            "parts": forms.TEMPLATE_PARTS,
            "languages": LANGUAGES,
        }

    @app.get("/praktijk/{practice_id}/teksten")
    async def teksten(request: Request, practice_id: str) -> Response:
        signed = await pages.member(request, practice_id)
        config = pages.configs.get(practice_id)
        code = request.query_params.get("type")
        if code is None and config is not None and config.appointment_types:
            code = sorted(config.appointment_types)[0]
        if request.query_params.get("nieuw"):
            code = None
        return pages.render(
            request,
            "teksten.html",
            {
                "practice_id": practice_id,
                "config": config,
                "errors": {},
                "saved": request.query_params.get("opgeslagen"),
                "sent": None,
                **texts_context(config, code, practice_id),
            },
            signed=signed,
        )

    def texts_candidate(
        current: PracticeConfig | None, form: FormData, practice_id: str
    ) -> tuple[str, dict[str, Any]]:
        code = str(form.get("code") or "").strip()
        return code, forms.texts_update(_base(current, practice_id), form, code)

    @app.post("/praktijk/{practice_id}/teksten")
    async def teksten_post(request: Request, practice_id: str) -> Response:
        signed = await pages.member(request, practice_id)
        form = await pages.form(request, signed)
        pages.beheerder(signed, practice_id)
        current = pages.configs.get(practice_id)
        code, data = texts_candidate(current, form, practice_id)
        t = translator(pages.lang(request))
        errors: forms.FormErrors = {}
        if not code:
            errors["code"] = [t("code_required")]

        def again(status: int, extra: dict[str, Any] | None = None) -> Response:
            context = texts_context(current, code, practice_id)
            context["values"].update({k: v for k, v in form.items() if isinstance(v, str)})
            return pages.render(
                request,
                "teksten.html",
                {
                    "practice_id": practice_id,
                    "config": current,
                    "errors": errors,
                    "saved": None,
                    "sent": None,
                    **context,
                    **(extra or {}),
                },
                signed=signed,
                status_code=status,
            )

        if errors:
            return again(422)
        return await _save(
            pages,
            request,
            signed,
            practice_id,
            "teksten",
            current,
            data,
            form,
            again,
            lambda reason: forms.errors_by_field(reason, forms.texts_fields(code)),
            errors,
            redirect=f"/praktijk/{practice_id}/teksten?"
            + urlencode({"type": code, "opgeslagen": 1}),
        )

    def preview_of(
        current: PracticeConfig | None, form: FormData, practice_id: str, lang: str
    ) -> tuple[RenderedReminder | None, str | None, PracticeConfig | None]:
        code, data = texts_candidate(current, form, practice_id)
        if not code:
            code = "preview"
            data = forms.texts_update(_base(current, practice_id), form, code)
        data["reminders_enabled"] = False  # the preview does not need a complete config
        try:
            config = validate_practice_config(data)
        except ConfigRejected as exc:
            return None, exc.reason, None
        if not config.phone:
            return None, translator(lang)("preview_needs_phone"), config
        appointment = sample_appointment(config, code, pages.clock.now())
        try:
            # A browser cannot show the mail's cid: logo: the preview gets a data: URI.
            return render_reminder(config, appointment, lang, logo_src="data"), None, config
        except TemplateRejected as exc:
            return None, exc.reason, config

    @app.post("/praktijk/{practice_id}/teksten/voorbeeld")
    async def teksten_preview(request: Request, practice_id: str) -> Response:
        signed = await pages.member(request, practice_id)
        form = await pages.form(request, signed)
        current = pages.configs.get(practice_id)
        lang = str(form.get("preview_lang") or "nl")
        lang = lang if lang in LANGUAGES else "nl"
        rendered, problem, config = preview_of(current, form, practice_id, lang)
        response = pages.render(
            request,
            "preview.html",
            {
                "practice_id": practice_id,
                "rendered": rendered,
                "problem": problem,
                "preview_lang": lang,
                "urgent": urgent_line(config.phone, lang) if config and config.phone else None,
            },
            signed=signed,
        )
        response.headers["Content-Security-Policy"] = PREVIEW_CSP
        response.headers["X-Frame-Options"] = "SAMEORIGIN"
        return response

    @app.post("/praktijk/{practice_id}/teksten/test")
    async def teksten_test(request: Request, practice_id: str) -> Response:
        signed = await pages.member(request, practice_id)
        form = await pages.form(request, signed)
        current = pages.configs.get(practice_id)
        code = str(form.get("code") or "").strip()
        lang = str(form.get("preview_lang") or "nl")
        lang = lang if lang in LANGUAGES else "nl"
        t = translator(pages.lang(request))
        rendered, problem, _ = preview_of(current, form, practice_id, lang)
        errors: forms.FormErrors = {}
        sent = None
        if rendered is None:
            errors["general"] = [problem or ""]
        else:
            message = pages.mailer.new_message(
                signed.email, f"[{t('test')}] {rendered.email.subject}"
            )
            message.set_content(rendered.email.text)
            message.add_alternative(rendered.email.html, subtype="html")
            try:
                await pages.mailer.send(message)
                sent = t("test_sent")
            except Exception:
                log.warning("test mail not sent", extra={"practice_id": practice_id}, exc_info=True)
                errors["general"] = [t("test_failed")]
        context = texts_context(current, code or None, practice_id)
        context["values"].update({k: v for k, v in form.items() if isinstance(v, str)})
        return pages.render(
            request,
            "teksten.html",
            {
                "practice_id": practice_id,
                "config": current,
                "errors": errors,
                "saved": None,
                "sent": sent,
                **context,
            },
            signed=signed,
            status_code=200 if sent else 422,
        )

    # ------------------------------------------------------------------ overleggen
    def rules_context(config: PracticeConfig | None, request: Request) -> dict[str, Any]:
        rules = config.meeting_rules if config is not None else None
        probe = request.query_params.get("probeer", "")[:200]
        verdict = None
        if probe.strip():
            verdict = classify(_Probe(probe), rules)
        return {
            "values": {
                "agenda_ids": "\n".join(rules.agenda_ids) if rules else "",
                "appointment_type_codes": "\n".join(rules.appointment_type_codes) if rules else "",
                "keywords": "\n".join(rules.keywords) if rules else "",
            },
            "defaults": DEFAULT_KEYWORDS,
            "probe": probe,
            "verdict": verdict,
            "version": config.version if config is not None else "none",
        }

    @app.get("/praktijk/{practice_id}/overleggen")
    async def overleggen(request: Request, practice_id: str) -> Response:
        signed = await pages.member(request, practice_id)
        config = pages.configs.get(practice_id)
        return pages.render(
            request,
            "overleggen.html",
            {
                "practice_id": practice_id,
                "config": config,
                "errors": {},
                "saved": request.query_params.get("opgeslagen"),
                **rules_context(config, request),
            },
            signed=signed,
        )

    @app.post("/praktijk/{practice_id}/overleggen")
    async def overleggen_post(request: Request, practice_id: str) -> Response:
        signed = await pages.member(request, practice_id)
        form = await pages.form(request, signed)
        pages.beheerder(signed, practice_id)
        current = pages.configs.get(practice_id)
        data = forms.meeting_rules_update(_base(current, practice_id), form)
        errors: forms.FormErrors = {}

        def again(status: int, extra: dict[str, Any] | None = None) -> Response:
            context = rules_context(current, request)
            context["values"].update({k: v for k, v in form.items() if isinstance(v, str)})
            return pages.render(
                request,
                "overleggen.html",
                {
                    "practice_id": practice_id,
                    "config": current,
                    "errors": errors,
                    "saved": None,
                    **context,
                    **(extra or {}),
                },
                signed=signed,
                status_code=status,
            )

        table = [
            ("meeting_rules.agenda_ids", "agenda_ids"),
            ("meeting_rules.appointment_type_codes", "appointment_type_codes"),
            ("meeting_rules.keywords", "keywords"),
            ("type '", "appointment_type_codes"),
        ]
        return await _save(
            pages,
            request,
            signed,
            practice_id,
            "overleggen",
            current,
            data,
            form,
            again,
            lambda r: forms.errors_by_field(r, table),
            errors,
        )

    # ------------------------------------------------------------------ verzendlog
    @app.get("/praktijk/{practice_id}/verzendlog")
    async def verzendlog(request: Request, practice_id: str) -> Response:
        signed = await pages.member(request, practice_id)
        config = pages.configs.get(practice_id)
        zone = ZoneInfo(config.timezone if config else "Europe/Amsterdam")
        day_text = request.query_params.get("dag", "")
        status = request.query_params.get("uitkomst", "")
        day: date | None = None
        errors: forms.FormErrors = {}
        if day_text:
            try:
                day = date.fromisoformat(day_text)
            except ValueError:
                day = None
            if day is not None and not _FIRST_LOG_DAY <= day <= _LAST_LOG_DAY:
                # No reminder lies there (INSTANT_RANGE), and year 1 or 9999 would not
                # even convert to UTC: said beside the field, the filter not applied.
                errors["dag"] = [translator(pages.lang(request))("day_out_of_range")]
                day = None
        log_page = await pages.outcomes.log(
            practice_id,
            day=day,
            status=status if status in ("sent", "suppressed", "failed") else None,
            limit=500,
            labels=_labels(config),
            zone=zone,
        )
        return pages.render(
            request,
            "verzendlog.html",
            {
                "practice_id": practice_id,
                "config": config,
                "rows": log_page.rows,
                "total": log_page.total,
                "day": day_text if day is not None or errors else "",
                "first_day": _FIRST_LOG_DAY.isoformat(),
                "last_day": _LAST_LOG_DAY.isoformat(),
                "errors": errors,
                "status": status,
                "zone": zone,
                "reasons": REASONS[pages.lang(request)],
            },
            signed=signed,
            status_code=422 if errors else 200,
        )

    # ------------------------------------------------------------------ follow-up
    async def _report(practice_id: str) -> Report:
        async with pages.sessions() as session:
            return await build_report(session, practice_id, until=pages.clock.now(), weeks=12)

    @app.get("/praktijk/{practice_id}/follow-up")
    async def follow_up(request: Request, practice_id: str) -> Response:
        signed = await pages.member(request, practice_id)
        report = await _report(practice_id)
        empty = not any(f.count or f.base for f in report.figures)
        return pages.render(
            request,
            "followup.html",
            {
                "practice_id": practice_id,
                "config": pages.configs.get(practice_id),
                "report": report,
                "empty": empty,
                "weeks": _week_rows(report),
                "charts": list(CHARTS),
            },
            signed=signed,
        )

    @app.get("/praktijk/{practice_id}/follow-up.csv")
    async def follow_up_csv(request: Request, practice_id: str) -> Response:
        await pages.member(request, practice_id)
        report = await _report(practice_id)
        return Response(
            report_csv(report),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="follow-up-{practice_id}.csv"'},
        )

    @app.get("/praktijk/{practice_id}/follow-up/{name}.svg")
    async def follow_up_chart(request: Request, practice_id: str, name: str) -> Response:
        await pages.member(request, practice_id)
        if name not in CHARTS:
            raise HTTPException(status_code=404)
        report = await _report(practice_id)
        # Drawn on the server; its own styles only, no script, nothing from elsewhere.
        return Response(
            chart_svg(report, name),
            media_type="image/svg+xml",
            headers={"Content-Security-Policy": _CHART_CSP},
        )

    @app.get("/favicon.ico")
    async def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/robots.txt")
    async def robots() -> Response:
        return PlainTextResponse("User-agent: *\nDisallow: /\n")

    return app


# The days the send log can be filtered on: those of INSTANT_RANGE.
_FIRST_LOG_DAY = INSTANT_RANGE[0].date()
_LAST_LOG_DAY = (INSTANT_RANGE[1] - timedelta(days=1)).date()

_CHART_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'self'"


@dataclass(frozen=True)
class _WeekRow:
    week: str
    appointments: int
    sent: int
    suppressed: int
    failed: int
    reach: str
    noshow_reminded: str
    noshow_not_reminded: str
    cancelled: str


def _share(figure: Figure | None) -> str:
    """``3/40 (8%)``: a rate always beside its counts."""
    if figure is None or not figure.base:
        return "–"
    return f"{figure.count}/{figure.base} ({100 * figure.count / figure.base:.0f}%)"


def _week_rows(report: Report) -> list[_WeekRow]:
    rows = []
    for w in report.weeks:

        def total(measure: str, week: str = w) -> int:
            return sum(f.count for f in report.figures if f.week == week and f.measure == measure)

        appointments = report.value(w, "appointments")
        cancelled = report.value(w, "cancelled_after_reminder", "all")
        in_time = report.value(w, "cancelled_after_reminder", "in_time")
        rows.append(
            _WeekRow(
                week=w,
                appointments=appointments.count if appointments else 0,
                sent=total("sent"),
                suppressed=total("suppressed"),
                failed=total("failed"),
                reach=_share(report.value(w, "reach")),
                noshow_reminded=_share(report.value(w, "noshow_reminded", "all")),
                noshow_not_reminded=_share(report.value(w, "noshow_not_reminded", "all")),
                cancelled=(
                    f"{cancelled.count} ({in_time.count if in_time else 0})" if cancelled else "0"
                ),
            )
        )
    return rows


@dataclass(frozen=True)
class _Coded:
    code: str
    display: str


@dataclass(frozen=True)
class _Agenda:
    id: str
    display: str


@dataclass(frozen=True)
class _Patient:
    required: Any = "required"


class _Probe:
    """A text tried in the overleggen box, as type code and display and agenda display."""

    kind = None

    def __init__(self, text: str) -> None:
        self.patient = _Patient()
        self.agenda = _Agenda(id=text, display=text)
        self.appointment_type = _Coded(code=text, display=text)


def _labels(config: PracticeConfig | None) -> dict[str, str]:
    if config is None:
        return {}
    return {code: text.label for code, text in config.appointment_types.items()}


async def _send_code(pages: Pages, email: str, code: str, lang: str) -> None:
    t = translator(lang)
    message: EmailMessage = pages.mailer.new_message(email, t("code_subject"))
    message.set_content(t("code_body").format(code=code, minutes=pages.code_minutes))
    try:
        await pages.mailer.send(message)
    except Exception:
        # The address is not logged; the person asks for a new code.
        log.warning(
            "sign-in code not sent: the mail server refused or is unreachable", exc_info=True
        )


async def _save(
    pages: Pages,
    request: Request,
    signed: Signed,
    practice_id: str,
    page: str,
    current: PracticeConfig | None,
    data: dict[str, Any],
    form: FormData,
    again: Callable[[int], Response],
    to_fields: Callable[[str], forms.FormErrors],
    errors: forms.FormErrors,
    redirect: str | None = None,
) -> Response:
    t = translator(pages.lang(request))
    based_on = _version_of(form)
    current_version = current.version if current is not None else None
    if based_on != current_version:
        SAVES.labels(page, "outdated").inc()
        errors["general"] = [t("outdated").format(version=current_version or 0)]
        return again(409)
    data["practice_id"] = practice_id
    try:
        config = validate_practice_config(data)
    except ConfigRejected as exc:
        SAVES.labels(page, "invalid").inc()
        errors.update(to_fields(exc.reason))
        return again(422)
    if current is not None and current.model_dump(exclude={"version"}) == config.model_dump(
        exclude={"version"}
    ):
        return RedirectResponse(
            redirect or f"/praktijk/{practice_id}/{page}?opgeslagen=0", status_code=303
        )
    try:
        new = await pages.configs.publish(config, based_on)
    except VersionConflict as exc:
        SAVES.labels(page, "outdated").inc()
        errors["general"] = [t("outdated").format(version=exc.current)]
        return again(409)
    changed = forms.changed_fields(current, new)
    await pages.audit(practice_id, signed.email, f"save:{page}", changed, new.version)
    SAVES.labels(page, "published").inc()
    log.info(
        "practice config saved from the beheeromgeving",
        extra={"practice_id": practice_id, "version": new.version, "fields": changed, "page": page},
    )
    return RedirectResponse(
        redirect or f"/praktijk/{practice_id}/{page}?opgeslagen=1", status_code=303
    )

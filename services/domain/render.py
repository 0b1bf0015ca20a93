"""Reminder texts: the practice's Jinja2 templates in a sandbox, plus the lines the system adds.

How a message is made (DESIGN rules 4 and 5):

- **Context.** Templates see only ``practice`` (``name``, ``phone``), ``date_text``,
  ``time_text``, ``weekday`` (Babel, in the patient's language and the practice's time
  zone), ``label``, ``with_whom``, ``instructions`` (the practice's text for the type, or
  a neutral "uw afspraak"), ``location``, ``practitioner`` (display name) and
  ``preferences_url``. Never the patient id, the BSN, the HIS comment or the HIS type
  display (which may hold the complaint).
- **Lookup.** Per part: ``templates[type code][language]`` → ``templates["default"]
  [language]`` → the built-in text for that language (``templates/*.j2`` beside this
  module). A patient who chose English gets the built-in English text where the
  practice wrote only Dutch, never the Dutch practice text.
- **Sandbox.** ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``; on top of it
  an allow-list of template constructs: variables, ``if``/``elif``/``else``, comparisons,
  ``~`` and a few string filters. No loops, ``set``, macros, includes, calls or
  arithmetic: a reminder text needs none of them, and without them no template can
  spin or allocate its way into a denial of service in every service that loads it.
  Whatever an allowed expression raises as it renders (``1 is divisibleby 0``) is a
  refusal with the reason, like a template that does not compile.
- **The urgent line** ("Heeft u een spoedeisende vraag? Bel dan de praktijk: …") is
  appended by this module *after* rendering, to the text part, the HTML part and the
  push body (not the subject). No template can remove it because no template produces
  it. In the HTML part the practice's markup, after rendering with autoescape, goes
  through an allow-list sanitiser (:func:`sanitize_html`): only simple text markup
  survives, every attribute except a checked ``href`` is dropped (so no ``style``,
  ``class`` or ``hidden``), comments, ``<style>``, ``<script>``, ``<textarea>`` and the
  like are removed with their content, and every element left open is closed. The
  result is placed in a fixed layout whose next sibling is the urgent line in its own
  paragraph: it cannot end up inside a comment, an unclosed tag or a hidden element.
"""

from __future__ import annotations

import html
import re
import weakref
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from html.parser import HTMLParser
from importlib import resources
from itertools import chain
from typing import Any, Literal, get_args
from zoneinfo import ZoneInfo

from babel.dates import format_date, format_time
from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, nodes
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from schemas.models import (
    UNSAFE_TEXT,
    Agenda,
    Appointment,
    AppointmentType,
    AppointmentTypeText,
    Location,
    MeetingInfo,
    PatientParticipant,
    PracticeConfig,
    Practitioner,
)
from services.domain.branding import LogoSource, apply_branding

__all__ = [
    "CONTEXT_NAMES",
    "LANGUAGES",
    "PARTS",
    "NotRendered",
    "RenderedEmail",
    "RenderedPush",
    "RenderedReminder",
    "TemplateRejected",
    "check_templates",
    "render_reminder",
    "sample_appointment",
    "sanitize_html",
    "urgent_line",
]

Part = Literal["subject", "text", "html", "push_title", "push_body"]
PARTS: tuple[Part, ...] = get_args(Part)
LANGUAGES: tuple[str, ...] = ("nl", "en")
DEFAULT_KEY = "default"

CONTEXT_NAMES: tuple[str, ...] = (
    "practice",
    "date_text",
    "time_text",
    "weekday",
    "label",
    "with_whom",
    "instructions",
    "location",
    "practitioner",
    "preferences_url",
)
_PRACTICE_FIELDS = ("name", "phone")

_URGENT = {
    "nl": "Heeft u een spoedeisende vraag? Bel dan de praktijk: {phone}.",
    "en": "Urgent question? Call the practice: {phone}.",
}
_FOOTER = {
    "nl": (
        "U krijgt deze herinnering omdat u afspraakherinneringen heeft aangezet. "
        "Wijzigen of uitzetten: {url}"
    ),
    "en": (
        "You get this reminder because you switched appointment reminders on. "
        "To change or stop them: {url}"
    ),
}
_NEUTRAL_LABEL = {"nl": "uw afspraak", "en": "your appointment"}
_DATE_PATTERN = "EEEE d MMMM y"  # "dinsdag 1 december 2026", "Tuesday 1 December 2026"

# Rendered parts larger than this are refused (a template cannot loop, so only a
# pathological filter chain could get near it).
_MAX_OUTPUT = {"subject": 1000, "push_title": 1000, "push_body": 4000}
_MAX_OUTPUT_DEFAULT = 200_000


class TemplateRejected(ValueError):
    """A template that cannot be used; ``reason`` is written for a practice administrator."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


@dataclass(frozen=True)
class RenderedPush:
    title: str
    body: str


class NotRendered(LookupError):
    """A part of a RenderedReminder that was not asked for (its channel was not)."""


@dataclass(frozen=True)
class RenderedReminder:
    """The parts of the channels render_reminder was asked for; asking for another
    channel's parts raises NotRendered (a bug in the caller, not in the message)."""

    rendered_email: RenderedEmail | None
    rendered_push: RenderedPush | None

    @property
    def email(self) -> RenderedEmail:
        if self.rendered_email is None:
            raise NotRendered("the e-mail parts were not rendered (channel not asked for)")
        return self.rendered_email

    @property
    def push(self) -> RenderedPush:
        if self.rendered_push is None:
            raise NotRendered("the push parts were not rendered (channel not asked for)")
        return self.rendered_push


@dataclass(frozen=True)
class _PracticeView:
    """What templates see of the practice (a dataclass: no dict methods to reach)."""

    name: str
    phone: str


# --------------------------------------------------------------------------- environments


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, answering its attribute check for ``practice.name`` and
    ``practice.phone`` at once: plain strings of a frozen dataclass, which its checks
    (no underscore, not internal, not a mutating method) pass every time
    (tests/unit/test_render_safety.py asks the base class for each field)."""

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if type(obj) is _PracticeView and attr in _PRACTICE_FIELDS:
            return True
        return super().is_safe_attribute(obj, attr, value)


def _environment(autoescape: bool) -> ImmutableSandboxedEnvironment:
    env = _Sandbox(
        undefined=StrictUndefined,
        autoescape=autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,
    )
    env.globals.clear()  # no range, lipsum, cycler, joiner, namespace, dict
    env.filters = {name: env.filters[name] for name in _ALLOWED_FILTERS}
    return env


_ALLOWED_FILTERS = (
    "capitalize",
    "count",
    "d",
    "default",
    "e",
    "escape",
    "first",
    "last",
    "length",
    "lower",
    "string",
    "striptags",
    "title",
    "trim",
    "truncate",
    "upper",
    "wordcount",
)

_HTML_ENV = _environment(autoescape=True)
_TEXT_ENV = _environment(autoescape=False)

# Node types a practice template may contain (exact types). Everything else is refused
# with a reason naming the construct.
_ALLOWED_NODES: frozenset[type[nodes.Node]] = frozenset(
    {
        nodes.Template,
        nodes.Output,
        nodes.TemplateData,
        nodes.Name,
        nodes.Getattr,
        nodes.Getitem,
        nodes.Slice,
        nodes.Const,
        nodes.If,
        nodes.CondExpr,
        nodes.Filter,
        nodes.Test,
        nodes.Compare,
        nodes.Operand,
        nodes.And,
        nodes.Or,
        nodes.Not,
        nodes.Concat,
        nodes.Add,
        nodes.Tuple,
        nodes.List,
        nodes.Keyword,
    }
)
_CONSTRUCT_NAMES: dict[type[nodes.Node], str] = {
    nodes.For: "{% for %} loops",
    nodes.Assign: "{% set %}",
    nodes.AssignBlock: "{% set %}",
    nodes.Macro: "{% macro %}",
    nodes.CallBlock: "{% call %}",
    nodes.Call: "function and method calls",
    nodes.Include: "{% include %}",
    nodes.Extends: "{% extends %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}",
    nodes.With: "{% with %}",
    nodes.FilterBlock: "{% filter %} blocks",
    nodes.Block: "{% block %}",
    nodes.Scope: "{% autoescape %}",
    nodes.ScopedEvalContextModifier: "{% autoescape %}",
    nodes.EvalContextModifier: "{% autoescape %}",
    nodes.Mul: "arithmetic",
    nodes.Div: "arithmetic",
    nodes.FloorDiv: "arithmetic",
    nodes.Mod: "arithmetic",
    nodes.Pow: "arithmetic",
    nodes.Sub: "arithmetic",
    nodes.Neg: "arithmetic",
    nodes.Pos: "arithmetic",
    nodes.Dict: "dictionaries",
}
_ALLOWED_HINT = "use variables, {% if %}/{% elif %}/{% else %} and the filters " + ", ".join(
    _ALLOWED_FILTERS
)


# Deeper than this, Python's compiler gets slow (a chain of 300 filters takes it half a
# minute): refused before compiling, so no config can stall the services that load it.
_MAX_DEPTH = 40


def _walk(node: nodes.Node, depth: int = 0) -> Iterator[nodes.Node]:
    if depth > _MAX_DEPTH:
        raise ValueError("the template is nested too deeply")
    yield node
    for child in node.iter_child_nodes():
        yield from _walk(child, depth + 1)


def _check_source(source: str, *, html_part: bool) -> Template:
    """Parse, check the constructs and names statically, compile. Raises ValueError."""
    try:
        return _check_tree(source, html_part=html_part)
    except RecursionError as exc:
        raise ValueError("the template is nested too deeply") from exc


def _check_tree(source: str, *, html_part: bool) -> Template:
    env = _HTML_ENV if html_part else _TEXT_ENV
    try:
        tree = env.parse(source)
    except TemplateSyntaxError as exc:
        raise ValueError(f"line {exc.lineno}: {exc.message}") from exc
    for node in _walk(tree):
        kind = type(node)
        line = getattr(node, "lineno", None)
        where = f"line {line}: " if line else ""
        if kind not in _ALLOWED_NODES:
            construct = _CONSTRUCT_NAMES.get(kind, kind.__name__)
            raise ValueError(
                f"{where}{construct} cannot be used in reminder texts; {_ALLOWED_HINT}"
            )
        if isinstance(node, nodes.Name) and node.name not in CONTEXT_NAMES:
            raise ValueError(
                f"{where}unknown name '{node.name}'; available: {', '.join(_context_help())}"
            )
        if isinstance(node, nodes.Getattr):
            if node.attr.startswith("_"):
                raise ValueError(f"{where}'{node.attr}' reaches outside the template's context")
            _check_practice_field(node.node, node.attr, where)
        if (
            isinstance(node, nodes.Getitem)
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, str)
        ):
            if node.arg.value.startswith("_"):
                raise ValueError(
                    f"{where}'{node.arg.value}' reaches outside the template's context"
                )
            # label["format"] falls back to getattr: the same rule as label.format.
            _check_practice_field(node.node, node.arg.value, where)
        if isinstance(node, nodes.Filter) and node.name not in _ALLOWED_FILTERS:
            raise ValueError(f"{where}filter '{node.name}' cannot be used; {_ALLOWED_HINT}")
    try:
        return env.from_string(tree)
    except TemplateError as exc:  # e.g. an unknown test
        raise ValueError(str(exc)) from exc
    except SyntaxError as exc:  # Python's own limits on the generated code
        raise ValueError("the template is nested too deeply") from exc


def _check_practice_field(base: nodes.Node, attr: str, where: str) -> None:
    """Only ``practice.name`` and ``practice.phone`` are attributes: ``label.format`` or
    ``date_text.upper`` would render a method's repr into the message."""
    if isinstance(base, nodes.Name) and base.name == "practice":
        if attr not in _PRACTICE_FIELDS:
            raise ValueError(
                f"{where}unknown name 'practice.{attr}'; available: {', '.join(_context_help())}"
            )
        return
    raise ValueError(
        f"{where}'.{attr}': only practice.name and practice.phone have fields; use a "
        f"filter instead (such as |upper); {_ALLOWED_HINT}"
    )


def _context_help() -> list[str]:
    names = [n for n in CONTEXT_NAMES if n != "practice"]
    return [f"practice.{f}" for f in _PRACTICE_FIELDS] + names


@lru_cache(maxsize=4096)
def _compiled(source: str, html_part: bool) -> Template | str:
    """The checked template, or the reason it was refused (cached both ways)."""
    try:
        return _check_source(source, html_part=html_part)
    except ValueError as exc:
        return str(exc)


@lru_cache(maxsize=32)
def _builtin_source(part: str, language: str) -> str:
    resource = resources.files("services.domain").joinpath("templates", f"{part}.{language}.j2")
    return resource.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- context


def _language(language: str) -> str:
    return language if language in LANGUAGES else "nl"


def _type_text(config: PracticeConfig, code: str) -> AppointmentTypeText | None:
    return config.appointment_types.get(code)


@lru_cache(maxsize=1024)
def _date_texts(day: date, language: str) -> tuple[str, str]:
    # A burst of reminders shares a handful of days: babel formats each once.
    return (
        format_date(day, _DATE_PATTERN, locale=language),
        format_date(day, "EEEE", locale=language),
    )


@lru_cache(maxsize=2048)
def _time_text(moment: time, language: str) -> str:
    return format_time(moment, "HH:mm", locale=language)


@dataclass(frozen=True)
class _Plan:
    """What every reminder of one practice config, appointment type and language shares:
    the compiled template (or the reason it was refused) per part, the time zone, the
    context values that do not depend on the appointment's time, place or practitioner,
    the urgent line and the footer."""

    config: weakref.ref[PracticeConfig]  # the cache is keyed by id(config): checked
    zone: ZoneInfo
    static: dict[str, Any]
    templates: dict[str, Template | str]
    urgent: str
    footer: str | None


# Bounded: a practice has a few types and two languages; configs replaced by a newer
# version are not kept alive (a weak reference), and their entries go at the next clear.
_PLANS: dict[tuple[int, str, str], _Plan] = {}
_MAX_PLANS = 4096


def _plan(config: PracticeConfig, code: str, language: str) -> _Plan:
    key = (id(config), code, language)
    plan = _PLANS.get(key)
    if plan is not None and plan.config() is config:
        return plan
    text = _type_text(config, code)
    plan = _Plan(
        config=weakref.ref(config),
        zone=ZoneInfo(config.timezone),
        static={
            "practice": _PracticeView(name=config.name, phone=config.phone or ""),
            # The practice's own label, never the HIS display (it may hold the complaint).
            "label": text.label if text is not None else _NEUTRAL_LABEL[language],
            "with_whom": text.with_whom if text is not None else "",
            "instructions": text.instructions if text is not None else "",
            "preferences_url": config.preferences_url or "",
        },
        templates={
            part: _compiled(_source_for(config, code, language, part), part == "html")
            for part in PARTS
        },
        urgent=urgent_line(config.phone or "", language),
        footer=(
            _FOOTER[language].format(url=config.preferences_url) if config.preferences_url else None
        ),
    )
    if len(_PLANS) >= _MAX_PLANS:
        _PLANS.clear()
    _PLANS[key] = plan
    return plan


def _appointment_context(plan: _Plan, appointment: Appointment, language: str) -> dict[str, Any]:
    local = appointment.start.astimezone(plan.zone)
    date_text, weekday = _date_texts(local.date(), language)
    return {
        **plan.static,
        "date_text": date_text,
        "time_text": _time_text(local.time(), language),
        "weekday": weekday,
        "location": appointment.location.display if appointment.location is not None else "",
        "practitioner": appointment.practitioner.display,
    }


def _context(
    config: PracticeConfig,
    appointment: Appointment,
    language: str,
) -> dict[str, Any]:
    plan = _plan(config, appointment.appointment_type.code, language)
    return _appointment_context(plan, appointment, language)


def _source_for(config: PracticeConfig, type_code: str, language: str, part: str) -> str:
    for key in (type_code, DEFAULT_KEY):
        by_language = config.templates.get(key)
        if by_language is None:
            continue
        template_set = by_language.get(language)  # type: ignore[call-overload]
        if template_set is not None:
            source: str | None = getattr(template_set, part)
            if source is not None:
                return source
    return _builtin_source(part, language)


def _render_part(source: str, part: str, context: Mapping[str, Any]) -> str:
    return _render_compiled(_compiled(source, part == "html"), part, context)


def _render_compiled(compiled: Template | str, part: str, context: Mapping[str, Any]) -> str:
    if isinstance(compiled, str):
        raise ValueError(compiled)
    try:
        output = compiled.render(context)
    except RecursionError as exc:
        raise ValueError("the template is nested too deeply") from exc
    except SecurityError as exc:
        raise ValueError(f"reaches outside the template's context ({exc})") from exc
    except UndefinedError as exc:
        raise ValueError(f"unknown name ({exc})") from exc
    except MemoryError:
        raise
    except Exception as exc:
        # Whatever else the expression raises (TemplateError, TypeError, ArithmeticError
        # from ``is divisibleby 0``, a NameError of Jinja's own code for ``1e400``...) is
        # the template's fault: a refusal, never an exception the caller did not expect.
        raise ValueError(f"fails to render: {exc}") from exc
    limit = _MAX_OUTPUT.get(part, _MAX_OUTPUT_DEFAULT)
    if len(output) > limit:
        raise ValueError(f"renders to {len(output)} characters; the limit is {limit}")
    return output


# --------------------------------------------------------------------------- output shaping

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# What may never reach a subject, a push message or the e-mail text, whatever a template
# or a value produced (the edges refuse these already; this is the second line).
_UNSAFE = re.compile(UNSAFE_TEXT.pattern + "+")
_SPACES = re.compile(r"[ \t]+")
_BLANK_LINES = re.compile(r"\n{3,}")
# _UNSAFE without the line feed: a run of unsafe characters within one line.
_UNSAFE_IN_LINE = re.compile(
    UNSAFE_TEXT.pattern.replace("\x00-\x1f", "\x00-\x09\x0b-\x1f", 1) + "+"
)
assert _UNSAFE_IN_LINE.pattern != _UNSAFE.pattern


def _replaced(pattern: re.Pattern[str], by: str, value: str) -> str:
    """``pattern.sub(by, value)``, asked first with ``search``: most texts hold nothing to
    replace, and a search of these character classes is several times cheaper than a
    sub that finds nothing."""
    return value if pattern.search(value) is None else pattern.sub(by, value)


def _one_line(value: str) -> str:
    """Subject and push texts: CR/LF and other control, line-separator and direction
    characters become one space."""
    value = _replaced(_UNSAFE, " ", value)
    if "\t" in value or "  " in value:  # else every run of blanks is one space already
        value = _SPACES.sub(" ", value)
    return value.strip()


def _tidy_text(value: str) -> str:
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = _replaced(_UNSAFE_IN_LINE, " ", value)  # line by line: the line feeds stay
    value = "\n".join([line.rstrip() for line in value.split("\n")])
    if "\n\n\n" in value:
        value = _BLANK_LINES.sub("\n\n", value)
    return value.strip("\n")


def urgent_line(phone: str, language: str) -> str:
    return _URGENT[_language(language)].format(phone=phone)


# Simple text markup only. No attributes except a checked href on <a>.
_ALLOWED_TAGS = frozenset(
    {
        "a",
        "b",
        "blockquote",
        "br",
        "div",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "hr",
        "i",
        "li",
        "ol",
        "p",
        "span",
        "strong",
        "u",
        "ul",
    }
)
_VOID_TAGS = frozenset({"br", "hr"})
# Removed together with everything inside them.
_DROP_WITH_CONTENT = frozenset(
    {
        "head",
        "iframe",
        "math",
        "noembed",
        "noframes",
        "noscript",
        "object",
        "script",
        "select",
        "style",
        "svg",
        "template",
        "textarea",
        "title",
        "xmp",
    }
)
_LINK_SCHEMES = ("http", "https", "mailto", "tel")
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*):")
_URL_NOISE = re.compile(r"[\x00-\x20\x7f]+")


def _safe_href(value: str | None) -> str | None:
    if not value:
        return None
    cleaned = _URL_NOISE.sub("", value)
    match = _SCHEME.match(cleaned.lower())
    if match is None or match.group(1) not in _LINK_SCHEMES:
        return None
    return value.strip()


class _Sanitizer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[str] = []
        self.dropping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.dropping:
            if tag in _DROP_WITH_CONTENT:
                self.dropping += 1
            return
        if tag in _DROP_WITH_CONTENT:
            self.dropping = 1
            return
        if tag not in _ALLOWED_TAGS:
            return
        if tag == "a":
            href = _safe_href(dict(attrs).get("href"))
            self.out.append(f'<a href="{html.escape(href)}">' if href else "<a>")
        else:
            self.out.append(f"<{tag}>")
        if tag not in _VOID_TAGS:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID_TAGS:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if self.dropping:
            if tag in _DROP_WITH_CONTENT:
                self.dropping -= 1
            return
        if tag not in self.open:
            return
        while self.open:
            top = self.open.pop()
            self.out.append(f"</{top}>")
            if top == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self.dropping:
            self.out.append(html.escape(data, quote=False))

    # Comments, doctype, processing instructions, CDATA: dropped.

    def result(self) -> str:
        self.close()
        while self.open:
            self.out.append(f"</{self.open.pop()}>")
        return "".join(self.out)


def sanitize_html(fragment: str) -> str:
    """Reduce practice HTML to simple, balanced text markup without styling or hiding."""
    simple = _sanitize_simple(fragment)
    if simple is not None:
        return simple
    sanitizer = _Sanitizer()
    sanitizer.feed(fragment)
    return sanitizer.result()


# A bare allowed tag, opening or closing: all the markup most templates hold.
_SIMPLE_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9]*)>")


def _text(between: str) -> str:
    """Text between tags, unescaped and escaped again. Without ``&`` or ``>`` (and no
    ``<``: every one is a tag) that gives the text back as it is."""
    if "&" not in between and ">" not in between:
        return between
    return html.escape(html.unescape(between), quote=False)


def _sanitize_simple(fragment: str) -> str | None:
    """What _Sanitizer gives for a fragment whose only markup is bare allowed tags
    (``<p>``, ``</strong>``, ``<br>``: no attributes, comments or other tags), without
    the Python HTML parser; None for anything else. The same steps: the text between
    tags unescaped and escaped again, the tags balanced (tests/unit/test_render_safety.py
    checks it against the parser). What the tags become depends on the tags alone, not
    on the text between them: planned once per sequence of tags (``_tag_plan``; the
    renders of one template share one or a few), the texts filled in here."""
    parts = _SIMPLE_TAG.split(fragment)  # text, slash, name, text, slash, name, ..., text
    if fragment.count("<") * 3 != len(parts) - 1:
        return None
    plan = _tag_plan(tuple(parts[1::3]), tuple(parts[2::3]))
    if plan is None:
        return None
    tags, tail = plan
    texts = parts[0::3]
    return (
        "".join(chain.from_iterable(zip(map(_text, texts), tags, strict=False)))
        + _text(texts[-1])
        + tail
    )


@lru_cache(maxsize=1024)
def _tag_plan(
    slashes: tuple[str, ...], names: tuple[str, ...]
) -> tuple[tuple[str, ...], str] | None:
    """For a sequence of bare tags: what each becomes (itself in lower case, the closing
    tags it balances, or nothing), and the closing tags after the last text; None when a
    tag is not allowed."""
    tags: list[str] = []
    opened: list[str] = []
    for slash, raw in zip(slashes, names, strict=True):
        name = raw.lower()
        if name not in _ALLOWED_TAGS:
            return None
        if not slash:
            tags.append(f"<{name}>")
            if name not in _VOID_TAGS:
                opened.append(name)
        elif name in opened:
            closing: list[str] = []
            while opened:
                top = opened.pop()
                closing.append(f"</{top}>")
                if top == name:
                    break
            tags.append("".join(closing))
        else:
            tags.append("")
    return tuple(tags), "".join(f"</{name}>" for name in reversed(opened))


def _html_document(
    language: str, subject: str, body: str, urgent: str, preferences_url: str | None
) -> str:
    footer_html = ""
    if preferences_url:
        link = html.escape(preferences_url)
        footer = html.escape(_FOOTER[language].format(url="\x00"))
        footer_html = "<p>" + footer.replace("\x00", f'<a href="{link}">{link}</a>') + "</p>\n"
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="{language}">\n'
        '<head><meta charset="utf-8">'
        f"<title>{html.escape(subject)}</title></head>\n"
        "<body>\n"
        f"<div>\n{body}\n</div>\n"
        f"<p><strong>{html.escape(urgent)}</strong></p>\n"
        f"{footer_html}"
        "</body>\n"
        "</html>\n"
    )


# --------------------------------------------------------------------------- public API


def render_reminder(
    config: PracticeConfig,
    appointment: Appointment,
    language: str,
    *,
    logo_src: LogoSource = "cid",
    channels: Collection[str] = ("email", "push"),
) -> RenderedReminder:
    """The e-mail and push texts for one appointment, in ``language`` (``nl`` if unknown).

    Only the parts of ``channels`` are rendered (the notifier asks for the channels a
    reminder goes by); the others raise NotRendered when asked for. Raises
    TemplateRejected when a template of those parts fails (checked templates do not) or
    when the practice has no phone number: no reminder goes out without the urgent line.
    """
    language = _language(language)
    if not config.phone:
        raise TemplateRejected(
            "the practice has no phone number; every reminder tells the patient to phone the "
            "practice for urgent matters, so set `phone` first"
        )
    code = appointment.appointment_type.code
    plan = _plan(config, code, language)
    context = _appointment_context(plan, appointment, language)

    def render(part: Part) -> str:
        try:
            return _render_compiled(plan.templates[part], part, context)
        except ValueError as exc:
            raise TemplateRejected(
                f"template for type {code!r}, {language}, {part}: {exc}"
            ) from exc

    urgent = plan.urgent
    email: RenderedEmail | None = None
    push: RenderedPush | None = None
    if "email" in channels:
        subject_part, text_part, html_part = render("subject"), render("text"), render("html")
        subject = _one_line(subject_part)
        text = _tidy_text(text_part) + "\n\n" + urgent + "\n"
        if plan.footer:
            text += "\n" + plan.footer + "\n"
        html_body = sanitize_html(_replaced(_UNSAFE, " ", html_part)).strip()
        email = RenderedEmail(
            subject=subject,
            text=text,
            # The practice's look (services.domain.branding); ``logo_src="data"`` for
            # previews in a browser, which cannot show a cid: image.
            html=apply_branding(
                _html_document(language, subject, html_body, urgent, config.preferences_url),
                config,
                logo_src=logo_src,
            ),
        )
    if "push" in channels:
        title_part, body_part = render("push_title"), render("push_body")
        push_body = _one_line(body_part)
        # The urgent line stands on a line of its own after the practice's text: no text
        # before it shares its paragraph, so no direction character (refused anyway) could
        # reorder it.
        push_body = f"{push_body}\n{urgent}" if push_body else urgent
        push = RenderedPush(title=_one_line(title_part), body=push_body)
    return RenderedReminder(rendered_email=email, rendered_push=push)


_SAMPLE_NOW = datetime(2026, 11, 30, 12, 0, tzinfo=ZoneInfo("UTC"))
_SAMPLE_TYPE = AppointmentTypeText(
    label="Consult 10 minuten", with_whom="de huisarts", instructions="Neem uw medicijnen mee."
)


def sample_appointment(config: PracticeConfig, type_code: str, now: datetime) -> Appointment:
    """A booked appointment of this type on the next working day at 09:30, for previews."""
    zone = ZoneInfo(config.timezone)
    day = now.astimezone(zone).date() + timedelta(days=1)
    while day.weekday() >= 5:  # Saturday, Sunday
        day += timedelta(days=1)
    start = datetime.combine(day, time(9, 30), tzinfo=zone)
    text = _type_text(config, type_code)
    return Appointment(
        source_system="preview",
        practice_id=config.practice_id,
        appointment_id="preview",
        sequence=0,
        status="booked",
        start=start,
        end=start + timedelta(minutes=10),
        appointment_type=AppointmentType(
            code=type_code, display=text.label if text is not None else ""
        ),
        agenda=Agenda(id="preview", display=""),
        practitioner=Practitioner(id="preview", display="A. Voorbeeld"),
        location=Location(display=config.name),
        booked_via="portal",
        patient=PatientParticipant(id="preview-patient"),
        booked_at=now - timedelta(days=7),
        updated_at=now,
        meeting=MeetingInfo(is_meeting=False),
    )


def _check_contexts(config: PracticeConfig, code: str, language: str) -> list[dict[str, Any]]:
    """A full and a sparse context, so both sides of every ``if`` get rendered."""
    if code != DEFAULT_KEY and code in config.appointment_types:
        sample_code = code
    else:
        sample_code = "__sample__"
        config = config.model_copy(
            update={"appointment_types": {**config.appointment_types, sample_code: _SAMPLE_TYPE}}
        )
    if not config.phone or not config.preferences_url:
        config = config.model_copy(
            update={
                "phone": config.phone or "020-1234567",
                "preferences_url": config.preferences_url or "https://portaal.example.org/",
            }
        )
    full = _context(config, sample_appointment(config, sample_code, _SAMPLE_NOW), language)
    full = {
        **full,
        "with_whom": full["with_whom"] or "de huisarts",
        "instructions": full["instructions"] or "Neem uw medicijnen mee.",
    }
    sparse = {
        **full,
        "with_whom": "",
        "instructions": "",
        "location": "",
        "practitioner": "",
        "preferences_url": "",
    }
    return [full, sparse]


def check_templates(config: PracticeConfig) -> None:
    """Compile and test-render every practice template, in the sandbox.

    Raises TemplateRejected naming the type code, language and part of the first
    template that fails to compile, uses a construct or name it may not, or fails to
    render against a sample context.
    """
    for code, by_language in config.templates.items():
        for language, template_set in by_language.items():
            contexts: list[dict[str, Any]] | None = None
            for part in PARTS:
                source: str | None = getattr(template_set, part)
                if source is None:
                    continue
                where = f"templates.{code}.{language}.{part}"
                try:
                    if contexts is None:
                        contexts = _check_contexts(config, code, language)
                    for context in contexts:
                        _render_part(source, part, context)
                except ValueError as exc:
                    raise TemplateRejected(f"{where}: {exc}") from exc

"""No template can hide the urgent line, reach outside its context or spin the services."""

from __future__ import annotations

import re
import time
from dataclasses import fields
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from schemas.models import UNSAFE_TEXT, PracticeConfig
from services.domain.render import (
    _HTML_ENV,
    _PRACTICE_FIELDS,
    TemplateRejected,
    _context,
    _one_line,
    _PracticeView,
    _render_part,
    _sanitize_simple,
    _Sanitizer,
    _source_for,
    _tidy_text,
    check_templates,
    render_reminder,
    sample_appointment,
    sanitize_html,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
URGENT = "Heeft u een spoedeisende vraag? Bel dan de praktijk: 020-1234567."


def config(templates: dict[str, Any]) -> PracticeConfig:
    return PracticeConfig.model_validate(
        {
            "practice_id": "01999001",
            "name": "De Linde",
            "phone": "020-1234567",
            "appointment_types": {"C10": {"label": "Consult", "with_whom": "de huisarts"}},
            "templates": templates,
        }
    )


class _Tree(HTMLParser):
    """Where the urgent text sits: its open ancestors, and every attribute and comment seen."""

    VOID = frozenset({"br", "hr", "meta", "img", "input", "link"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.attributes: list[tuple[str, str, str | None]] = []
        self.comments: list[str] = []
        self.urgent_ancestors: list[list[str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += [(tag, name, value) for name, value in attrs]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self.stack:
            while self.stack.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if "spoedeisende vraag" in data:
            self.urgent_ancestors.append(list(self.stack))

    def handle_comment(self, data: str) -> None:
        self.comments.append(data)


def parse(document: str) -> _Tree:
    tree = _Tree()
    tree.feed(document)
    tree.close()
    return tree


TRICKS = [
    "<!-- {{ practice.phone }}",
    "<!--",
    "<div style=display:none>",
    '<div style="display:none">{{ label }}',
    "<p hidden>",
    '<span class="hidden" aria-hidden="true">',
    "<style>p { display: none !important }</style>",
    "<style>",
    "<script>",
    "<textarea>",
    "<title>",
    "<template>",
    "<noscript>",
    "<xmp>",
    "<plaintext>",
    "<iframe srcdoc='x'>",
    "<svg><style>*{display:none}</style>",
    "<select><option>",
    '<a href="javascript:alert(1)">',
    "<table><tr><td>",
    "<details><summary>Lees meer</summary>",
    "</div></div></body></html><p>Einde",
    "<![CDATA[",
    '<meta http-equiv="refresh" content="0;url=https://example.org">',
    '<base href="https://example.org/">',
    '<font color="white" size="0">',
    "<div><div><div><ul><li><a href='https://example.org'>",
    '<img src="x" onerror="alert(1)">',
    "{{ '<!--' }}",
    "<b",
]


@pytest.mark.parametrize("trick", TRICKS)
def test_html_tricks_cannot_hide_the_urgent_line(trick: str) -> None:
    cfg = config({"default": {"nl": {"html": f"<p>Tot morgen.</p>{trick}"}}})
    check_templates(cfg)
    rendered = render_reminder(cfg, sample_appointment(cfg, "C10", NOW), "nl")
    tree = parse(rendered.email.html)
    # The urgent line is a paragraph straight under <body>, outside all practice markup.
    assert tree.urgent_ancestors == [["html", "body", "p", "strong"]]
    assert tree.comments == []
    assert not [a for a in tree.attributes if a[1] not in ("lang", "charset", "href")]
    assert not {"style", "script", "textarea", "template", "iframe", "svg"} & set(tree.tags)
    assert tree.tags.count("title") == 1  # the layout's own
    for tag, name, value in tree.attributes:
        if name == "href":
            assert value is not None and value.startswith(("https://", "http://")), (tag, value)
    assert URGENT in rendered.email.text
    assert rendered.push.body.endswith(URGENT)


def test_sanitizer_keeps_simple_markup_and_balances_it() -> None:
    assert sanitize_html("<p>Hallo <strong>daar</strong></p>") == (
        "<p>Hallo <strong>daar</strong></p>"
    )
    assert sanitize_html("<ul><li>een<li>twee") == "<ul><li>een<li>twee</li></li></ul>"
    assert sanitize_html('<a href="https://x.example.org/?a=1&b=2">x</a>') == (
        '<a href="https://x.example.org/?a=1&amp;b=2">x</a>'
    )
    assert sanitize_html('<a href=" JaVa\tScRiPt:alert(1)">x</a>') == "<a>x</a>"
    assert sanitize_html("a <!-- b --> c") == "a  c"
    assert sanitize_html("<style>x</style>y") == "y"
    assert sanitize_html("1 &lt; 2 &amp; <em>3 > 2</em>") == "1 &lt; 2 &amp; <em>3 &gt; 2</em>"
    assert sanitize_html("<p style='color:red' class=c id=i>t</p>") == "<p>t</p>"
    assert sanitize_html("</p></div>tekst") == "tekst"


ESCAPES = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ practice.__class__ }}",
    "{{ practice['__dict__'] }}",
    "{{ self }}",
    "{{ self._TemplateReference__context }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ lipsum() }}",
    "{{ range(10) }}",
    "{{ namespace() }}",
    "{{ config }}",
    "{{ request }}",
    "{{ loop }}",
    "{{ label.format(1) }}",
    "{{ label.upper() }}",
]


@pytest.mark.parametrize("source", ESCAPES)
def test_sandbox_escapes_are_rejected(source: str) -> None:
    cfg = config({"C10": {"nl": {"text": source}}})
    with pytest.raises(TemplateRejected) as caught:
        check_templates(cfg)
    assert caught.value.reason.startswith("templates.C10.nl.text: ")


CONSTRUCTS = [
    ("{% for c in label %}{{ c }}{% endfor %}", "{% for %} loops"),
    ("{% set x = label %}{{ x }}", "{% set %}"),
    ("{% macro m() %}x{% endmacro %}", "{% macro %}"),
    ("{% include 'x' %}", "{% include %}"),
    ("{% extends 'x' %}", "{% extends %}"),
    ("{% import 'x' as y %}", "{% import %}"),
    ("{% with a = 1 %}{% endwith %}", "{% with %}"),
    ("{% filter upper %}x{% endfilter %}", "{% filter %}"),
    ("{% autoescape false %}{{ label }}{% endautoescape %}", "{% autoescape %}"),
    ("{{ 'x' * 1000000000 }}", "arithmetic"),
    ("{{ 9 ** 9 ** 9 }}", "arithmetic"),
    ("{{ '%0999999999d' % 1 }}", "arithmetic"),
    ("{{ label|center(1000000000) }}", "filter 'center'"),
    ("{{ label|replace('a', 'aaaa') }}", "filter 'replace'"),
    ("{{ label|format(1) }}", "filter 'format'"),
    ("{{ label|safe }}", "filter 'safe'"),
    ("{{ label|attr('__class__') }}", "filter 'attr'"),
]


@pytest.mark.parametrize(("source", "named"), CONSTRUCTS)
def test_constructs_beyond_simple_texts_are_rejected_with_the_reason(
    source: str, named: str
) -> None:
    cfg = config({"default": {"en": {"html": source}}})
    with pytest.raises(TemplateRejected) as caught:
        check_templates(cfg)
    assert caught.value.reason.startswith("templates.default.en.html: ")
    assert named in caught.value.reason


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ label", "templates.default.nl.subject: line 1: unexpected end of template"),
        ("{% if label %}x", "templates.default.nl.subject: line 1: Unexpected end of template"),
        ("{{ patient_name }}", "unknown name 'patient_name'; available: practice.name"),
        ("{{ practice.email }}", "unknown name 'practice.email'"),
        ("{{ label is nonsense }}", "templates.default.nl.subject: "),
        # Runtime errors of the expression itself: each a refusal, none a crash.
        ("{{ 1 is divisibleby 0 }}", "templates.default.nl.subject: fails to render"),
        ("{{ 1.5 is divisibleby 0.0 }}", "templates.default.nl.subject: fails to render"),
        ("{{ 1 is divisibleby 1e-400 }}", "templates.default.nl.subject: fails to render"),
        ("{{ label[::0] }}", "templates.default.nl.subject: fails to render"),
        ("{{ label|truncate(1e400) }}", "templates.default.nl.subject: fails to render"),
    ],
)
def test_broken_templates_are_rejected_with_where_and_why(source: str, expected: str) -> None:
    cfg = config({"default": {"nl": {"subject": source}}})
    with pytest.raises(TemplateRejected) as caught:
        check_templates(cfg)
    assert expected in caught.value.reason


def test_unknown_name_in_an_untaken_branch_is_still_rejected() -> None:
    cfg = config({"C10": {"nl": {"text": "{% if false %}{{ bsn }}{% endif %}ok"}}})
    with pytest.raises(TemplateRejected, match="unknown name 'bsn'"):
        check_templates(cfg)


def test_both_branches_are_rendered_at_check_time() -> None:
    # `label.nope` only fails when rendered; the sparse and full contexts reach both sides.
    for source in (
        "{% if instructions %}{{ label.nope }}{% endif %}",
        "{% if not instructions %}{{ label.nope }}{% endif %}",
    ):
        cfg = config({"default": {"nl": {"text": source}}})
        with pytest.raises(TemplateRejected, match=r"templates\.default\.nl\.text"):
            check_templates(cfg)


def test_filters_and_conditions_that_are_allowed() -> None:
    source = (
        "{{ label|upper }} {{ label|lower|capitalize }} {{ label|title|trim }} "
        "{{ (instructions or 'geen')|truncate(20) }} {{ location|default('praktijk', true) }} "
        "{{ 'ja' if with_whom else 'nee' }} {{ label ~ '!' }} {{ label[:3] }} "
        "{% if weekday == 'dinsdag' and time_text < '12:00' %}ochtend{% elif weekday %}"
        "middag{% else %}-{% endif %} {{ label|length }} {{ label|e }}"
    )
    cfg = config({"default": {"nl": {"text": source, "html": source}}})
    check_templates(cfg)


@pytest.mark.parametrize(
    "source",
    [
        "{{ " + "(" * 3000 + "label" + ")" * 3000 + " }}",
        "{{ label" + "|upper" * 300 + " }}",  # Python's compiler would take half a minute
        "{% if label %}" * 100 + "x" + "{% endif %}" * 100,
    ],
    ids=["parentheses", "filter-chain", "nested-ifs"],
)
def test_deeply_nested_templates_are_rejected_quickly(source: str) -> None:
    cfg = config({"default": {"nl": {"html": source}}})
    started = time.monotonic()
    with pytest.raises(TemplateRejected, match="nested too deeply"):
        check_templates(cfg)
    assert time.monotonic() - started < 5


def _parsed_sanitized(fragment: str) -> str:
    sanitizer = _Sanitizer()
    sanitizer.feed(fragment)
    return sanitizer.result()


_PIECES = st.one_of(
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.sampled_from(
        ["&amp;", "&lt;", "&gt", "&#34;", "&#x27;", "&", ";", ">", "&amp", "&nbsp;", "&bogus;"]
    ),
    st.sampled_from(["p", "P", "strong", "br", "BR", "em", "a", "ul", "li", "div", "hr"]).flatmap(
        lambda name: st.sampled_from([f"<{name}>", f"</{name}>"])
    ),
    st.sampled_from(["<script>", "</style>", "<img>", "<p class=x>", "<br/>", "<!-- c -->", "<"]),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECES, max_size=30).map("".join))
def test_the_fast_sanitizer_gives_what_the_parser_gives(fragment: str) -> None:
    fast = _sanitize_simple(fragment)
    if fast is not None:
        assert fast == _parsed_sanitized(fragment)
    assert sanitize_html(fragment) == _parsed_sanitized(fragment)


def test_the_builtin_templates_take_the_fast_sanitizer() -> None:
    practice = config({})
    appointment = sample_appointment(practice, "C10", NOW)
    for language in ("nl", "en"):
        fragment = _render_part(
            _source_for(practice, "C10", language, "html"),
            "html",
            _context(practice, appointment, language),
        )
        assert "<strong>" in fragment
        assert _sanitize_simple(fragment) == _parsed_sanitized(fragment)


def _tidy_text_line_by_line(value: str) -> str:
    """The e-mail text's tidying as it was first written: line by line."""
    unsafe = re.compile(UNSAFE_TEXT.pattern + "+")
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    value = "\n".join(unsafe.sub(" ", line) for line in value.split("\n"))
    lines = [line.rstrip() for line in value.split("\n")]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n")


@settings(max_examples=400, deadline=None)
@given(
    st.text(
        st.one_of(
            st.sampled_from(["\n", "\r", " ", "\t", "\x00", "\x0b", "\x85", "\u2028"]),
            st.characters(),
        ),
        max_size=40,
    )
)
def test_the_text_is_tidied_as_line_by_line(value: str) -> None:
    # Unsafe characters become one space per run within a line; line feeds stay.
    assert _tidy_text(value) == _tidy_text_line_by_line(value)


@settings(max_examples=200, deadline=None)
@given(st.text(), st.text())
def test_the_sandbox_answers_for_the_practice_fields_as_the_base_class_does(
    name: str, phone: str
) -> None:
    """The shortcut for ``practice.name`` and ``practice.phone`` gives the immutable
    sandbox's own answer; every other attribute of the view is still asked of it."""
    view = _PracticeView(name=name, phone=phone)
    base = ImmutableSandboxedEnvironment()
    assert set(_PRACTICE_FIELDS) == {f.name for f in fields(_PracticeView)}
    for attr in (*_PRACTICE_FIELDS, "__class__", "__dict__", "_x", "__reduce__", "__init__"):
        value = getattr(view, attr, None)
        assert _HTML_ENV.is_safe_attribute(view, attr, value) == base.is_safe_attribute(
            view, attr, value
        )
    for attr in _PRACTICE_FIELDS:
        assert base.is_safe_attribute(view, attr, getattr(view, attr))


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from(["\n", "\r", " ", "  ", "\t", "\x00", "\x0b", "\x85", "\u2028"]),
            st.characters(),
        ),
        max_size=40,
    ).map("".join)
)
def test_one_line_texts_are_what_the_two_substitutions_give(value: str) -> None:
    """Subject and push texts: the same as both substitutions applied unconditionally."""
    unsafe = re.compile(UNSAFE_TEXT.pattern + "+")
    expected = re.sub(r"[ \t]+", " ", unsafe.sub(" ", value)).strip()
    assert _one_line(value) == expected

"""The kinds of email, their templates, and the multipart message built from them.

Each kind has three template files in ``templates/``: ``<kind>.subject.txt`` (one line),
``<kind>.txt`` (the plain-text part) and ``<kind>.html`` (the HTML part, which extends
``_layout.html``). Jinja2 renders them: HTML autoescaped (a name or an address is text,
never markup), every variable required (StrictUndefined: a missing value is an error, not
a blank). Each kind declares the values its templates use, split into those the outbox
may keep (``context``) and those it erases once the message is delivered (``secret``:
anything holding a token); ``service_name`` and ``public_url`` come from the settings.

Adding a kind: a member of `MailKind`, its `KindSpec` in `KINDS`, its three templates
(tests/test_mail.py checks that the templates use exactly the declared names).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from enum import StrEnum
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from app.core.config import Settings

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
# Available to every template, from the settings.
GLOBAL_NAMES = frozenset({"service_name", "public_url"})

# The values a template may be given: what JSON keeps as it is (the outbox stores them).
TemplateValue = str | int | float | bool | None


class MailKind(StrEnum):
    TEST = "test"  # python -m app send-test-email
    PASSWORD_RESET = "password_reset"  # noqa: S105 (a kind, not a password)
    VERIFY_EMAIL = "verify_email"
    PASSWORD_CHANGED = "password_changed"  # noqa: S105
    EMAIL_CHANGED = "email_changed"
    TOKEN_REUSE = "token_reuse"  # noqa: S105
    NEW_SIGN_IN = "new_sign_in"
    MFA_CHANGED = "mfa_changed"


@dataclass(frozen=True, slots=True)
class KindSpec:
    context: frozenset[str]  # kept in the outbox row
    secret: frozenset[str] = frozenset()  # erased from the row once the message is finished


def _spec(context: set[str], secret: set[str] | None = None) -> KindSpec:
    return KindSpec(frozenset(context), frozenset(secret or ()))


KINDS: Mapping[MailKind, KindSpec] = {
    MailKind.TEST: _spec(set()),
    # link: the page that takes the token; valid_for: e.g. "1 hour".
    MailKind.PASSWORD_RESET: _spec({"username", "valid_for"}, {"link"}),
    MailKind.VERIFY_EMAIL: _spec({"username", "valid_for"}, {"link"}),
    MailKind.PASSWORD_CHANGED: _spec({"username"}),
    # Sent to the old address; new_email is what the address was changed to.
    MailKind.EMAIL_CHANGED: _spec({"username", "new_email"}),
    # when: e.g. "2026-11-30 14:05 UTC".
    MailKind.TOKEN_REUSE: _spec({"username", "when"}),
    # device: the User-Agent (or "an unknown device"), ip: the address (or "unknown").
    MailKind.NEW_SIGN_IN: _spec({"username", "when", "device", "ip"}),
    # change: one sentence, e.g. "Two-factor sign-in was turned on for your account."
    MailKind.MFA_CHANGED: _spec({"username", "change"}),
}

_environment = Environment(
    loader=FileSystemLoader(TEMPLATE_DIR),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    auto_reload=False,  # the files do not change while the process runs
)


@dataclass(frozen=True, slots=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


def check_values(
    kind: MailKind, context: Mapping[str, TemplateValue], secret: Mapping[str, TemplateValue]
) -> None:
    """Raise ValueError unless ``context`` and ``secret`` hold exactly the kind's names."""
    spec = KINDS[kind]
    if set(context) != spec.context or set(secret) != spec.secret:
        raise ValueError(
            f"email {kind.value!r} takes context {sorted(spec.context)} and secret "
            f"{sorted(spec.secret)}, got {sorted(context)} and {sorted(secret)}"
        )


def render(kind: MailKind, values: Mapping[str, TemplateValue]) -> RenderedEmail:
    """The kind's subject, text and HTML, rendered with ``values`` (globals included)."""
    name = kind.value
    subject = _environment.get_template(f"{name}.subject.txt").render(values)
    return RenderedEmail(
        subject=" ".join(subject.split()),  # one header line, whatever the template holds
        text=_environment.get_template(f"{name}.txt").render(values),
        html=_environment.get_template(f"{name}.html").render(values),
    )


def compose(
    settings: Settings,
    *,
    kind: MailKind,
    recipient: str,
    context: Mapping[str, TemplateValue],
    secret: Mapping[str, TemplateValue],
    message_id_hint: str,
) -> EmailMessage:
    """A multipart/alternative message (plain text first, then HTML) from the kind's
    templates, from EMAIL_FROM to ``recipient``."""
    check_values(kind, context, secret)
    rendered = render(
        kind,
        {
            **context,
            **secret,
            "service_name": settings.service_name,
            "public_url": settings.public_url,
        },
    )
    message = EmailMessage()
    message["Subject"] = rendered.subject
    message["From"] = settings.email_sender
    message["To"] = recipient
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = make_msgid(idstring=message_id_hint, domain=sender_domain(settings))
    # RFC 3834: an automatic message; well-behaved responders do not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(rendered.text)
    message.add_alternative(rendered.html, subtype="html")
    return message


def sender_domain(settings: Settings) -> str:
    domain = parseaddr(settings.email_sender)[1].rpartition("@")[2]
    return re.sub(r"[^A-Za-z0-9.-]", "", domain) or "localhost"


def plain_text(message: EmailMessage) -> str:
    """The message's plain-text part, decoded (what the console backend shows)."""
    part = message.get_body(preferencelist=("plain",))
    if part is None:
        return ""
    assert isinstance(part, EmailMessage)
    content = part.get_content()
    return content if isinstance(content, str) else ""

"""Deliver a claimed notice by email, through whichever Django email backend is set."""

import logging
import smtplib

from django.conf import settings
from django.core.mail import EmailMessage, EmailMultiAlternatives

from dunning.effects.result import EffectResult
from dunning.models import CustomerNotice
from dunning.notifications.render import RenderedNotice, render_notice

logger = logging.getLogger(__name__)


def email_for(notice: CustomerNotice, rendered: RenderedNotice, recipient: str) -> EmailMessage:
    """The email of a notice: the text body, and the HTML one as its alternative."""
    message = EmailMultiAlternatives(
        subject=rendered.subject,
        body=rendered.text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=[recipient],
        # The same Message-ID on a resend after a crash lets the receiving side drop it.
        headers={
            "Message-ID": f"<notice-{notice.pk}@{settings.DUNNING_NOTICE_MESSAGE_ID_DOMAIN}>",
            "X-Dunning-Notice": notice.key,
        },
    )
    message.attach_alternative(rendered.html, "text/html")
    return message


def deliver(notice: CustomerNotice) -> EffectResult:
    rendered = render_notice(notice.kind, notice.context, preferred_locales=[notice.language])
    message = email_for(notice, rendered, notice.recipient)
    try:
        message.send()
    except smtplib.SMTPRecipientsRefused:
        return _refused(notice, "the mail server refused the address")
    except smtplib.SMTPResponseException as error:
        if error.smtp_code >= 500:
            return _refused(notice, f"the mail server refused the message ({error.smtp_code})")
        return EffectResult(ok=False, retryable=True, detail=f"SMTP {error.smtp_code}")
    except (smtplib.SMTPException, OSError) as error:
        return EffectResult(ok=False, retryable=True, detail=type(error).__name__)
    logger.info("event=notice_sent notice=%s kind=%s", notice.pk, notice.kind)
    return EffectResult(ok=True, detail="accepted by the mail server")


def _refused(notice: CustomerNotice, reason: str) -> EffectResult:
    CustomerNotice.objects.filter(pk=notice.pk).update(
        status=CustomerNotice.Status.FAILED, reason=reason
    )
    return EffectResult(ok=False, retryable=False, detail=reason)

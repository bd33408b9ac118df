"""The one place the Signal simulator reaches into another: Signal's verification SMS travels over the Telnyx
simulator's network (in process), so a number the sandbox's Telnyx account owns receives it as an inbound
message and its messaging profile gets ``message.received``; to any other number it goes nowhere (the code is
still listed by ``GET /signal/_control/state``)."""

from __future__ import annotations

from typing import Final

from ..telnyx.network import deliver_sms

# Where Signal's verification texts come from here (a number in the 555-01xx range reserved for fiction).
SIGNAL_SMS_SENDER: Final = "+12025550173"


def verification_text(code: str) -> str:
    """Signal's registration SMS to a client without Android's SMS retriever (signal-cli asks for none): the
    wording Signal-Android's own code parser is tested against, ``Your Signal code: 123456``, then the
    warning. Android clients get ``<#> Your Signal code: 123-456`` plus an app hash instead."""
    return f"Your Signal code: {code}\nDo not share this code"


def send_verification_sms(number: str, code: str) -> bool:
    """Text ``code`` to ``number``; True when the SMS reached a number of the Telnyx sandbox."""
    return deliver_sms(SIGNAL_SMS_SENDER, number, verification_text(code)) is not None

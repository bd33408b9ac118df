"""The world around the API: what happens to a message after the API accepts it, how an SMS from elsewhere
reaches one of the account's numbers, and the clock that later events (an order's outcome) run on.

Outbound: ``queued`` at once, then ``sent`` (``message.sent``) and ``delivered`` (``message.finalized``),
``carrier_delay_seconds`` apart. A message to an active number of the sandbox account arrives as an inbound
message there, like on-net traffic between two Telnyx numbers; anything else leaves the network (listed by
``GET /telnyx/_control/state``).

Inbound: ``deliver_sms`` hands an SMS to an active number of the account, which sends ``message.received``
to its messaging profile's ``webhook_url`` (then ``webhook_failover_url``). It is the one entry point for
other simulators (the Signal simulator sends its verification SMS through it) and for ``POST
/telnyx/_control/inbound``; see its docstring for the contract.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Final

from . import render
from .store import STATE, Message, MessagingProfile, Party, PhoneNumber, iso, new_uuid
from .webhooks import DISPATCHER

ON_NET_CARRIER: Final = "TELNYX LLC"
ON_NET_LINE_TYPE: Final = "VoIP"
OFF_NET_CARRIER: Final = "SANDBOX WIRELESS"
OFF_NET_LINE_TYPE: Final = "Wireless"

_tasks: set[asyncio.Task[None]] = set()
_generation = 0


def on_net(phone_number: str) -> Party:
    return Party(phone_number, ON_NET_CARRIER, ON_NET_LINE_TYPE)


def off_net(phone_number: str) -> Party:
    return Party(phone_number, OFF_NET_CARRIER, OFF_NET_LINE_TYPE)


def party(phone_number: str) -> Party:
    return on_net(phone_number) if STATE.owned(phone_number) is not None else off_net(phone_number)


def reset() -> None:
    global _generation
    _generation += 1
    for task in list(_tasks):
        task.cancel()
    _tasks.clear()


def after(delay: float, action: Callable[[], None]) -> None:
    """Run ``action`` ``delay`` seconds from now on the sandbox's loop, unless the sandbox is reset first."""

    async def wait(generation: int) -> None:
        await asyncio.sleep(delay)
        if generation == _generation:
            action()

    task = asyncio.get_running_loop().create_task(wait(_generation))
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


# ---------------------------------------------------------------------------------------------- outbound


def send(
    number: PhoneNumber,
    profile: MessagingProfile,
    to: str,
    text: str | None,
    media_urls: Sequence[str],
    subject: str | None = None,
    webhook_url: str | None = None,
    webhook_failover_url: str | None = None,
    use_profile_webhooks: bool = True,
    tags: Sequence[str] = (),
) -> Message:
    """Accept an outbound message from ``number`` and start its way through the network. Its webhooks go to
    its own URLs, then (``use_profile_webhooks``) to the profile's."""
    urls = [webhook_url, webhook_failover_url]
    if use_profile_webhooks:
        urls += [profile.webhook_url, profile.webhook_failover_url]
    if not webhook_url and not webhook_failover_url and use_profile_webhooks:
        webhook_url, webhook_failover_url = profile.webhook_url, profile.webhook_failover_url
    message = Message(
        id=new_uuid(),
        direction="outbound",
        sender=on_net(number.phone_number),
        recipient=party(to),
        text=text,
        media_urls=list(media_urls),
        messaging_profile_id=profile.id,
        received_at=iso(),
        subject=subject,
        webhook_url=webhook_url or None,
        webhook_failover_url=webhook_failover_url or None,
        webhook_urls=tuple(u for u in urls if u),
        tags=list(tags),
    )
    STATE.messages[message.id] = message
    after(STATE.settings.carrier_delay_seconds, lambda: _sent(message))
    return message


def _sent(message: Message) -> None:
    """The carrier took the message: on to its recipient, on the sandbox's network or off it."""
    message.status, message.sent_at = "sent", iso()
    _notify("message.sent", message)
    recipient = message.recipient.phone_number
    if STATE.owned(recipient) is not None:
        deliver_sms(message.sender.phone_number, recipient, message.text, message.media_urls, message.subject)
    else:
        STATE.off_network.append(message)
    after(STATE.settings.carrier_delay_seconds, lambda: _delivered(message))


def _delivered(message: Message) -> None:
    message.status, message.completed_at = "delivered", iso()
    _notify("message.finalized", message)


def _notify(event_type: str, message: Message) -> None:
    DISPATCHER.emit(event_type, render.message(message), message.webhook_urls)


# ---------------------------------------------------------------------------------------------- inbound


def deliver_sms(
    sender: str, to: str, text: str | None, media_urls: Sequence[str] = (), subject: str | None = None
) -> Message | None:
    """An SMS (an MMS with ``media_urls``) from ``sender`` reaches ``to``, both E.164 strings.

    If ``to`` is an active number of the sandbox's Telnyx account, the message is recorded (``GET
    /telnyx/v2/messages/{id}`` shows it) and ``message.received`` goes to the webhook URLs of the number's
    messaging profile (nowhere without a profile or URLs, as on Telnyx); the inbound message is returned.
    Otherwise the SMS went to a number the sandbox does not own and None is returned.

    Synchronous and quick: call it from anywhere in the sandbox's process (another simulator's handler, a
    test); the webhook is delivered in the background on the sandbox's event loop."""
    number = STATE.owned(to)
    if number is None:
        return None
    profile = STATE.profiles.get(number.messaging_profile_id or "")
    urls = (profile.webhook_url, profile.webhook_failover_url) if profile is not None else (None, None)
    message = Message(
        id=new_uuid(),
        direction="inbound",
        sender=party(sender),
        recipient=on_net(to),
        text=text,
        media_urls=list(media_urls),
        messaging_profile_id=profile.id if profile is not None else None,
        received_at=iso(),
        subject=subject,
        webhook_url=urls[0],
        webhook_failover_url=urls[1],
        webhook_urls=tuple(u for u in urls if u),
        status="webhook_delivered",
    )
    STATE.messages[message.id] = message
    _notify("message.received", message)
    return message

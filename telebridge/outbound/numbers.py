"""The account's phone numbers (Twilio's IncomingPhoneNumbers resource): which point at this service, and
pointing one here.

"Pointing here" means: ``VoiceUrl`` is ``<base>/twilio/voice`` with ``VoiceMethod=POST``, and neither a
``VoiceApplicationSid`` nor a ``TrunkSid`` is set on the number (either one makes Twilio ignore the voice URL).
:func:`configure_number` sets exactly four fields — ``VoiceUrl``, ``VoiceMethod=POST``, ``StatusCallback``
(``<base>/twilio/call-status``) and ``StatusCallbackMethod=POST`` — and leaves the overriding application or
trunk alone (removing one could break another system), warning about it instead.

Numbers you own are not personal data: the CLI prints them in full. They are never logged at info.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from telebridge.twilio.client import rest_client

from .phone import e164

__all__ = [
    "VOICE_PATH", "CALL_STATUS_PATH", "NumberInfo", "NumberChange", "ConfigurePlan", "NumberNotFound",
    "list_numbers", "find_number", "plan_configuration", "configure_number", "voice_url_for", "status_url_for",
]

VOICE_PATH = "/twilio/voice"
CALL_STATUS_PATH = "/twilio/call-status"


class NumberNotFound(LookupError):
    pass


def voice_url_for(base_url: str) -> str:
    return base_url.rstrip("/") + VOICE_PATH


def status_url_for(base_url: str) -> str:
    return base_url.rstrip("/") + CALL_STATUS_PATH


class NumberInfo(BaseModel):
    """What telebridge needs of one IncomingPhoneNumber resource."""

    model_config = ConfigDict(frozen=True)

    sid: str
    phone_number: str
    friendly_name: str = ""
    voice_url: str | None = None
    voice_method: str | None = None
    voice_fallback_url: str | None = None
    status_callback: str | None = None
    status_callback_method: str | None = None
    voice_application_sid: str | None = None
    trunk_sid: str | None = None

    @classmethod
    def from_resource(cls, r: Any) -> NumberInfo:
        """From an SDK ``IncomingPhoneNumberInstance`` (or anything with the same attributes)."""
        return cls(**{name: getattr(r, name, None) or (None if name != "friendly_name" else "")
                      for name in cls.model_fields})

    def overrides(self) -> list[str]:
        """Why Twilio would ignore this number's voice URL (empty: it uses it)."""
        reasons = []
        if self.voice_application_sid:
            reasons.append(f"VoiceApplicationSid {self.voice_application_sid} is set: Twilio uses that TwiML "
                           "App's Voice URL instead")
        if self.trunk_sid:
            reasons.append(f"TrunkSid {self.trunk_sid} is set: calls go to that Elastic SIP Trunk and no voice "
                           "URL is used")
        return reasons

    def points_at(self, base_url: str | None) -> bool:
        """Whether calls to this number reach ``base_url``'s voice webhook, by POST."""
        if not base_url:
            return False
        return (self.voice_url == voice_url_for(base_url) and (self.voice_method or "POST").upper() == "POST"
                and not self.overrides())

    def where(self, base_url: str | None) -> str:
        """A short verdict for ``numbers list``: ``yes`` or why not."""
        if self.points_at(base_url):
            return "yes"
        if not base_url:
            return "? (TELEBRIDGE_PUBLIC_URL unset)"
        if self.overrides():
            return "no (" + ("voice application" if self.voice_application_sid else "SIP trunk") + " overrides)"
        if self.voice_url == voice_url_for(base_url):
            return f"no (VoiceMethod {self.voice_method}, not POST)"
        return "no"


class NumberChange(BaseModel):
    field: str  # Twilio's form name
    old: str | None
    new: str


class ConfigurePlan(BaseModel):
    number: NumberInfo
    fields: dict[str, str]  # exactly what is sent, Twilio's form names → values
    changes: list[NumberChange]
    warnings: list[str]
    applied: bool = False

    @property
    def needed(self) -> bool:
        return bool(self.changes)


def _accounts(client: Any, settings: Any) -> Any:
    return client.api.v2010.accounts(settings.twilio_account_sid)


async def list_numbers(settings: Any, *, page_size: int = 50) -> list[NumberInfo]:
    """Every number of the account (all pages), sorted by phone number."""
    client, http = rest_client(settings)
    try:
        items = await _accounts(client, settings).incoming_phone_numbers.list_async(page_size=page_size)
    finally:
        await http.aclose()
    return sorted((NumberInfo.from_resource(r) for r in items), key=lambda n: n.phone_number)


async def find_number(settings: Any, number: str) -> NumberInfo:
    """The account's resource for ``number`` (E.164), or :class:`NumberNotFound`."""
    wanted = e164(number)
    client, http = rest_client(settings)
    try:
        items = await _accounts(client, settings).incoming_phone_numbers.list_async(phone_number=wanted)
    finally:
        await http.aclose()
    for r in items:
        if r.phone_number == wanted:
            return NumberInfo.from_resource(r)
    raise NumberNotFound(f"{wanted} is not a phone number of account {settings.twilio_account_sid} "
                         "(see: telebridge numbers list)")


def plan_configuration(number: NumberInfo, base_url: str) -> ConfigurePlan:
    """What pointing ``number`` at ``base_url`` sends, what it changes, and what would still override it."""
    fields = {
        "VoiceUrl": voice_url_for(base_url),
        "VoiceMethod": "POST",
        "StatusCallback": status_url_for(base_url),
        "StatusCallbackMethod": "POST",
    }
    current = {
        "VoiceUrl": number.voice_url,
        "VoiceMethod": number.voice_method,
        "StatusCallback": number.status_callback,
        "StatusCallbackMethod": number.status_callback_method,
    }
    changes = [NumberChange(field=k, old=current[k], new=v) for k, v in fields.items()
               if (current[k] or "") != v]
    warnings = [f"{reason}; clear it in Twilio's console (Phone Numbers → Voice Configuration) for the "
                "voice URL to take effect" for reason in number.overrides()]
    return ConfigurePlan(number=number, fields=fields, changes=changes, warnings=warnings)


async def configure_number(settings: Any, number: str, base_url: str, *, dry_run: bool = False) -> ConfigurePlan:
    """Point ``number`` at ``base_url`` (sending only the four fields, and only if something changes)."""
    info = await find_number(settings, number)
    plan = plan_configuration(info, base_url)
    if dry_run or not plan.needed:
        return plan
    client, http = rest_client(settings)
    try:
        resource = _accounts(client, settings).incoming_phone_numbers(info.sid)
        updated = await resource.update_async(
            voice_url=plan.fields["VoiceUrl"],
            voice_method=plan.fields["VoiceMethod"],
            status_callback=plan.fields["StatusCallback"],
            status_callback_method=plan.fields["StatusCallbackMethod"],
        )
    finally:
        await http.aclose()
    return plan.model_copy(update={"number": NumberInfo.from_resource(updated), "applied": True})

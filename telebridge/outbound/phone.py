"""Phone numbers: E.164 validation (``phonenumbers``) and masking for logs."""

from __future__ import annotations

import phonenumbers

from telebridge.logs import mask_number as mask

__all__ = ["InvalidNumber", "e164", "mask"]


class InvalidNumber(ValueError):
    pass


def e164(number: str) -> str:
    """``number`` as a valid E.164 string (``+14155550123``), or :class:`InvalidNumber` saying why not."""
    raw = (number or "").strip()
    if not raw.startswith("+"):
        raise InvalidNumber(f"{mask(raw)!s} is not in E.164 form: it must start with + and the country code")
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException as exc:
        raise InvalidNumber(f"{mask(raw)} is not a phone number ({exc})") from None
    if not phonenumbers.is_possible_number(parsed):
        raise InvalidNumber(f"{mask(raw)} is not a possible phone number (wrong length for its country)")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)

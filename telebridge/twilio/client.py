"""A ``twilio`` SDK client built from the settings: account SID with the auth token, or an API key SID/secret;
``TELEBRIDGE_TWILIO_API_BASE_URL`` points every v2010 resource at another origin (tests use a local fake)."""

from __future__ import annotations

from typing import Any

from twilio.rest import Client

from .rest import HttpxTwilioClient

__all__ = ["TwilioCredentialsMissing", "rest_client"]


class TwilioCredentialsMissing(ValueError):
    """No usable Twilio credentials in the settings."""


def rest_client(settings: Any, *, account_sid: str | None = None, timeout: float = 10.0) -> tuple[Client, HttpxTwilioClient]:
    """The SDK client and its httpx transport (``await http.aclose()`` when done)."""
    account = account_sid or settings.twilio_account_sid
    if not account:
        raise TwilioCredentialsMissing("TWILIO_ACCOUNT_SID is not set")
    key_sid = getattr(settings, "twilio_api_key_sid", None)
    key_secret = getattr(settings, "twilio_api_key_secret", None)
    if key_sid and key_secret is not None:
        username, password = key_sid, key_secret.get_secret_value()
    elif settings.auth_token():
        username, password = account, settings.auth_token()
    else:
        raise TwilioCredentialsMissing("set TWILIO_AUTH_TOKEN (or TWILIO_API_KEY and TWILIO_API_SECRET)")
    http = HttpxTwilioClient(timeout)
    client = Client(username, password, account_sid=account, http_client=http)
    if settings.twilio_api_base_url:
        client.api.base_url = settings.twilio_api_base_url.rstrip("/")
    return client, http

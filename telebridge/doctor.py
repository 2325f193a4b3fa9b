"""``telebridge doctor``: is this deployment ready for phone calls? A checklist, each failure with its fix.

The checks, in order (a check that cannot run because an earlier one failed is shown as skipped):

1. settings: ``TWILIO_ACCOUNT_SID``, credentials (auth token or API key), ``TWILIO_AUTH_TOKEN`` itself (Twilio
   signs webhooks with it; an API key cannot check them), ``TELEBRIDGE_PUBLIC_URL`` over https;
2. Twilio accepts the credentials (listing the account's numbers);
3. the public URL reaches *this service*: ``GET {public_url}/healthz`` answers telebridge's JSON;
4. signatures end to end: a webhook signed with the auth token, POSTed to ``{public_url}/twilio/voice``, gets
   TwiML; the same request unsigned gets 403 (otherwise anyone can start calls into the agent);
5. numbers: each number given with ``--number`` (or, by default, each whose voice URL is on the public host)
   points here — ``VoiceUrl`` ``{public_url}/twilio/voice`` by POST, no voice application or trunk overriding it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from .outbound.errors import explain, is_twilio_failure
from .outbound.numbers import NumberInfo, list_numbers, status_url_for, voice_url_for
from .outbound.phone import e164
from .twilio.signature import compute_signature

__all__ = ["Check", "run_checks", "render"]

# A harmless inbound-call webhook: the server answers it with TwiML and nothing else happens (no stream follows).
PROBE_FORM = {
    "CallSid": "CA" + "0" * 32, "AccountSid": "", "From": "+15005550006", "To": "+15005550006",
    "CallStatus": "ringing", "Direction": "inbound", "ApiVersion": "2010-04-01",
}


@dataclass
class Check:
    ok: bool | None  # None: skipped, or informational
    label: str
    detail: str = ""
    fix: str = ""


async def run_checks(settings: Any, *, numbers: list[str] | None = None, allow_http: bool = False,
                     timeout: float = 10.0) -> list[Check]:
    checks = _settings_checks(settings, allow_http)
    public = settings.public_url if _passed(checks, "TELEBRIDGE_PUBLIC_URL") else None
    account = await _account_check(settings) if _passed(checks, "Twilio credentials") else None
    checks.append(account[0] if account else Check(None, "Twilio accepts the credentials", "skipped"))
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False,
                                 headers={"User-Agent": "telebridge-doctor"}) as http:
        reach = await _reach_check(http, public) if public else Check(None, "public URL reaches telebridge", "skipped")
        checks.append(reach)
        checks.extend(await _signature_checks(http, settings, public if reach.ok else None))
    if account is not None and account[0].ok:
        checks.extend(_number_checks(account[1], public, numbers))
    else:
        checks.append(Check(None, "numbers point here", "skipped"))
    return checks


def render(checks: list[Check]) -> list[str]:
    lines = []
    for c in checks:
        mark = {True: "✓", False: "✗", None: "·"}[c.ok]
        lines.append(f"{mark} {c.label}" + (f": {c.detail}" if c.detail else ""))
        if c.ok is False and c.fix:
            lines.append(f"    fix: {c.fix}")
    failed = sum(c.ok is False for c in checks)
    lines.append(f"{failed} problem{'s' if failed != 1 else ''} found" if failed else "all checks passed")
    return lines


def _passed(checks: list[Check], label: str) -> bool:
    return any(c.label == label and c.ok for c in checks)


def _settings_checks(settings: Any, allow_http: bool) -> list[Check]:
    out = []
    sid = settings.twilio_account_sid or ""
    if sid.startswith("AC") and len(sid) == 34:
        out.append(Check(True, "TWILIO_ACCOUNT_SID", sid))
    else:
        out.append(Check(False, "TWILIO_ACCOUNT_SID", "missing" if not sid else "not an account SID (AC + 32 hex)",
                         "set TWILIO_ACCOUNT_SID to the AC… SID shown in Twilio's console (Account info)"))
    has_key = bool(settings.twilio_api_key_sid and settings.twilio_api_key_secret)
    if settings.auth_token() or has_key:
        out.append(Check(sid.startswith("AC") or None, "Twilio credentials",
                         "API key " + settings.twilio_api_key_sid if has_key else "auth token"))
    else:
        out.append(Check(False, "Twilio credentials", "missing",
                         "set TWILIO_AUTH_TOKEN (or TWILIO_API_KEY and TWILIO_API_SECRET)"))
    if settings.auth_token():
        out.append(Check(True, "TWILIO_AUTH_TOKEN (webhook signatures)", "set"))
    else:
        out.append(Check(False, "TWILIO_AUTH_TOKEN (webhook signatures)", "missing",
                         "set TWILIO_AUTH_TOKEN: Twilio signs every webhook with it (an API key cannot check "
                         "signatures), and without it anyone can start calls into the agent"))
    url = settings.public_url
    if not url:
        out.append(Check(False, "TELEBRIDGE_PUBLIC_URL", "missing",
                         "set TELEBRIDGE_PUBLIC_URL=https://your-host (your tunnel or load balancer)"))
    elif url.startswith("https://") or allow_http:
        out.append(Check(True, "TELEBRIDGE_PUBLIC_URL", url))
    else:
        out.append(Check(False, "TELEBRIDGE_PUBLIC_URL", f"{url} is not https://",
                         "Twilio needs an https webhook and a wss:// media stream: put TLS in front (ngrok, a "
                         "load balancer) and set the https:// address"))
    return out


async def _account_check(settings: Any) -> tuple[Check, list[NumberInfo]] | None:
    label = "Twilio accepts the credentials"
    try:
        numbers = await list_numbers(settings)
    except Exception as exc:
        if not is_twilio_failure(exc):
            raise
        fix = ("check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (or the API key) in Twilio's console"
               if "credentials" in explain(exc) else "check network access to Twilio's API")
        return Check(False, label, explain(exc), fix), []
    return Check(True, label, f"{len(numbers)} phone number{'s' if len(numbers) != 1 else ''} on the account"), numbers


async def _reach_check(http: httpx.AsyncClient, public: str) -> Check:
    label = "public URL reaches telebridge"
    url = public + "/healthz"
    try:
        response = await http.get(url)
    except httpx.HTTPError as exc:
        return Check(False, label, f"GET {url}: {type(exc).__name__} {exc}".rstrip(),
                     "start the service (telebridge serve) and the tunnel or proxy in front of it, and check that "
                     "TELEBRIDGE_PUBLIC_URL is their current address (ngrok's changes on every restart)")
    try:
        body = response.json()
    except ValueError:
        body = None
    if not (isinstance(body, dict) and {"ok", "calls", "accepting"} <= body.keys()):
        return Check(False, label, f"GET {url}: HTTP {response.status_code}, not telebridge's health JSON",
                     "something else answers at this address: point the tunnel/proxy at telebridge's port "
                     "(TELEBRIDGE_PORT, 8000 by default)")
    if response.status_code != 200 or not body["ok"]:
        return Check(False, label, f"GET {url}: HTTP {response.status_code}, the service is draining (shutting down)",
                     "wait for the restart to finish, or start the service again")
    return Check(True, label, f"{url} ({body['calls']} live call{'s' if body['calls'] != 1 else ''})")


async def _signature_checks(http: httpx.AsyncClient, settings: Any, public: str | None) -> list[Check]:
    signed_label, unsigned_label = "signed webhook accepted", "unsigned webhook refused (403)"
    token = settings.auth_token()
    if not public or not token:
        return [Check(None, signed_label, "skipped"), Check(None, unsigned_label, "skipped")]
    url = voice_url_for(public)
    form = dict(PROBE_FORM, AccountSid=settings.twilio_account_sid or "")
    out = []
    try:
        signed = await http.post(url, data=form, headers={"X-Twilio-Signature": compute_signature(url, form, token)})
        unsigned = await http.post(url, data=form)
    except httpx.HTTPError as exc:
        fix = "check the service's logs; the webhook must answer within Twilio's 15 s"
        return [Check(False, signed_label, f"POST {url}: {type(exc).__name__} {exc}".rstrip(), fix)]
    if signed.status_code == 200 and "<Response" in signed.text:
        out.append(Check(True, signed_label, f"POST {url} answered TwiML"))
    elif signed.status_code == 403:
        out.append(Check(False, signed_label, f"POST {url}: 403, the server rejects Twilio's signature",
                         "give the server the same TWILIO_AUTH_TOKEN as here, and set TELEBRIDGE_PUBLIC_URL on the "
                         f"server to exactly {public} (behind a proxy the server must sign-check the public URL)"))
    else:
        out.append(Check(False, signed_label, f"POST {url}: HTTP {signed.status_code}, no TwiML",
                         "check the service's logs for the webhook error"))
    if unsigned.status_code == 403:
        out.append(Check(True, unsigned_label, "signatures are enforced"))
    else:
        out.append(Check(False, unsigned_label, f"an unsigned POST got HTTP {unsigned.status_code}",
                         "the server does not check signatures: set TWILIO_AUTH_TOKEN on the server and remove "
                         "TELEBRIDGE_VALIDATE_SIGNATURES=false, or anyone can start calls into the agent"))
    return out


def _number_checks(numbers: list[NumberInfo], public: str | None, wanted: list[str] | None) -> list[Check]:
    if public is None:
        return [Check(None, "numbers point here", "skipped (no public URL)")]
    host = urlsplit(public).netloc
    if wanted:
        by_number = {n.phone_number: n for n in numbers}
        chosen: list[NumberInfo | str] = [by_number.get(e164(w), e164(w)) for w in wanted]
    else:
        chosen = [n for n in numbers if n.voice_url and urlsplit(n.voice_url).netloc == host]
        if not chosen:
            return [Check(False, "numbers point here", f"no number of the account points at {host}",
                          "telebridge numbers configure +1… (see telebridge numbers list)")]
    out = []
    for n in chosen:
        if isinstance(n, str):
            out.append(Check(False, f"number {n}", "not a number of this account",
                             "check the number, or TWILIO_ACCOUNT_SID (see telebridge numbers list)"))
        elif n.points_at(public):
            note = "" if n.status_callback == status_url_for(public) else " (call status callback not set here)"
            out.append(Check(True, f"number {n.phone_number}", f"points here{note}"))
        else:
            current = f"VoiceUrl is {n.voice_url or '(empty)'} {n.voice_method or ''}".strip()
            reasons = "; ".join(n.overrides()) or current
            out.append(Check(False, f"number {n.phone_number}", reasons,
                             f"telebridge numbers configure {n.phone_number}"
                             + (" (and clear the application/trunk in Twilio's console)" if n.overrides() else "")))
    return out

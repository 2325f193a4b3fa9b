"""Access control for everything telebridge serves besides Twilio's signed routes: API keys, session tokens,
the loopback-only default, origins and limits. See README "Security"."""

from .guard import ACCESS_SCOPE_KEY, Access, Guard, Refusal, log_access_posture
from .http import access_of, create_realtime_session, require_key
from .middleware import AccessMiddleware


def uvicorn_proxy_options(settings) -> dict:  # noqa: ANN001
    """uvicorn believes ``X-Forwarded-For``/``-Proto`` only from ``TELEBRIDGE_TRUSTED_PROXIES``."""
    return {"proxy_headers": True, "forwarded_allow_ips": settings.trusted_proxies}


__all__ = ["ACCESS_SCOPE_KEY", "Access", "AccessMiddleware", "Guard", "Refusal", "access_of",
           "create_realtime_session", "log_access_posture", "require_key", "uvicorn_proxy_options"]

"""The ``Agent`` an agent file defines, how telebridge loads it, and how a call gets its ``SessionConfig``.

An agent written for Jay must run here with only its import line changed, so ``Agent`` takes exactly Jay's
keyword arguments. What telebridge adds is checking them early: a sync ``def`` where Jay requires ``async def``,
a misspelt event handler or two tools with one name are reported when the file is loaded, not mid-call.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import itertools
import os
import re
import sys
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from telebridge.config import ProviderNotAvailable, check_implemented
from telebridge.session import SessionConfig, reject_unknown_fields

EVENT_HANDLERS: tuple[str, ...] = (
    "on_user_started_speaking",
    "on_user_stopped_speaking",
    "on_agent_started_speaking",
    "on_agent_stopped_speaking",
    "on_user_message_added",
    "on_agent_message_added",
    "on_agent_interrupted",
    "on_function_calls_collected",
    "on_function_calls_executed",
)


class AgentLoadError(Exception):
    """An agent file or module could not be turned into an :class:`Agent`."""


class AgentConfigError(Exception):
    """``configure_session`` failed or returned something telebridge cannot run."""


def is_async_callable(fn: object) -> bool:
    """True for ``async def`` functions, partials of them, and objects with an ``async def __call__``."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))


def _describe(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def _require_async(field: str, fn: object) -> None:
    if not is_async_callable(fn):
        raise ValueError(f"{field} must be an async function (`async def`); got {_describe(fn)}")


class Agent(BaseModel):
    """A voice agent: Jay's ``Agent(id=..., configure_session=..., llm_response_handler=..., tools=[...])``."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, validate_assignment=True)

    id: str = Field(min_length=1)
    configure_session: Callable[..., Any]
    llm_response_handler: Callable[..., Any]
    tools: list[Callable[..., Any]] = Field(default_factory=list)
    on_user_started_speaking: Callable[..., Any] | None = None
    on_user_stopped_speaking: Callable[..., Any] | None = None
    on_agent_started_speaking: Callable[..., Any] | None = None
    on_agent_stopped_speaking: Callable[..., Any] | None = None
    on_user_message_added: Callable[..., Any] | None = None
    on_agent_message_added: Callable[..., Any] | None = None
    on_agent_interrupted: Callable[..., Any] | None = None
    on_function_calls_collected: Callable[..., Any] | None = None
    on_function_calls_executed: Callable[..., Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data: Any) -> Any:
        return reject_unknown_fields("Agent", data, set(cls.model_fields))

    @field_validator("configure_session")
    @classmethod
    def _configure_is_async(cls, fn: Callable[..., Any]) -> Callable[..., Any]:
        _require_async("configure_session", fn)
        return fn

    @field_validator("llm_response_handler")
    @classmethod
    def _handler_is_async(cls, fn: Callable[..., Any]) -> Callable[..., Any]:
        if not (is_async_callable(fn) or inspect.isasyncgenfunction(fn)):
            raise ValueError(
                "llm_response_handler must be an `async def` returning an async iterable, or an async generator "
                f"function; got {_describe(fn)}"
            )
        return fn

    @field_validator("tools")
    @classmethod
    def _tools_are_named_async(cls, tools: list[Callable[..., Any]]) -> list[Callable[..., Any]]:
        seen: set[str] = set()
        for fn in tools:
            name = getattr(fn, "__name__", None)
            if not name:
                raise ValueError(f"each tool needs a __name__ (the function name the LLM calls); got {fn!r}")
            _require_async(f"tool {name!r}", fn)
            if name in seen:
                raise ValueError(f"two tools are named {name!r}; the LLM calls tools by name, so names must differ")
            seen.add(name)
        return tools

    @field_validator(*EVENT_HANDLERS)
    @classmethod
    def _event_handlers_are_async(cls, fn: Callable[..., Any] | None, info: Any) -> Callable[..., Any] | None:
        if fn is not None:
            _require_async(info.field_name, fn)
        return fn

    @property
    def tools_by_name(self) -> dict[str, Callable[..., Any]]:
        """Tools keyed by the function name the LLM uses to call them."""
        return {fn.__name__: fn for fn in self.tools}

    def handler(self, name: str) -> Callable[..., Any] | None:
        """The event handler for ``name`` (e.g. ``"on_agent_interrupted"``), or ``None`` if the agent has none."""
        if name not in EVENT_HANDLERS:
            raise ValueError(f"unknown agent event {name!r}; events are: {', '.join(EVENT_HANDLERS)}")
        handler: Callable[..., Any] | None = getattr(self, name)
        return handler


# --- loading ------------------------------------------------------------------------------------------------

_module_counter = itertools.count(1)


def _looks_like_path(spec: str) -> bool:
    return spec.endswith(".py") or os.sep in spec or "/" in spec or os.path.exists(spec)


def _load_file(path_text: str) -> tuple[object, str]:
    path = Path(path_text).expanduser()
    if not path.is_file():
        raise AgentLoadError(f"agent file not found: {path_text}")
    path = path.resolve()
    stem = re.sub(r"\W", "_", path.stem)
    module_name = f"telebridge_agent_{stem}_{next(_module_counter)}"
    import_spec = importlib.util.spec_from_file_location(module_name, path)
    if import_spec is None or import_spec.loader is None:
        raise AgentLoadError(f"cannot load {path} as a Python module")
    module = importlib.util.module_from_spec(import_spec)
    # Like `python agent.py`: the file's folder comes first on sys.path, so sibling imports work.
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    sys.modules[module_name] = module  # pydantic and dataclasses look their module up while the file runs
    try:
        import_spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        sys.modules.pop(module_name, None)
        raise AgentLoadError(f"could not import agent file {path}: {type(exc).__name__}: {exc}") from exc
    return module, str(path)


def _load_module(module_name: str) -> tuple[object, str]:
    try:
        return importlib.import_module(module_name), module_name
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise AgentLoadError(f"no module named {module_name!r} (is it on PYTHONPATH?)") from exc
        raise AgentLoadError(f"could not import module {module_name!r}: {type(exc).__name__}: {exc}") from exc
    except (Exception, SystemExit) as exc:
        raise AgentLoadError(f"could not import module {module_name!r}: {type(exc).__name__}: {exc}") from exc


def load_agent(spec: str) -> Agent:
    """Load an agent from ``path/to/agent.py``, ``package.module`` or ``package.module:attr``.

    The attribute defaults to ``agent``, the name Jay's agent files use.
    """
    attr = "agent"
    if _looks_like_path(spec):
        module, where = _load_file(spec)
    else:
        module_name, _, attr_part = spec.partition(":")
        attr = attr_part or attr
        module, where = _load_module(module_name)
    if not hasattr(module, attr):
        raise AgentLoadError(f"{where} has no attribute {attr!r}; define a module-level `{attr} = Agent(...)`")
    found = getattr(module, attr)
    if not isinstance(found, Agent):
        raise AgentLoadError(
            f"{where}:{attr} is a {type(found).__module__}.{type(found).__qualname__}, expected telebridge.Agent "
            "(is the file still importing from jay_ai?)"
        )
    return found


# --- configuring a call -------------------------------------------------------------------------------------


async def configure(agent: Agent, custom_data: dict[str, Any], *, call_id: str | None = None) -> SessionConfig:
    """Run the agent's ``configure_session`` for one call and return a config this build can run.

    The returned config's ``session_data`` and ``initial_messages`` are fresh containers, so an agent that
    returns one module-level ``SessionConfig`` for every call does not leak one caller's data into the next.
    """
    call_input: dict[str, Any] = {"custom_data": custom_data}
    if call_id is not None:
        call_input["call_id"] = call_id
    try:
        result = await agent.configure_session(call_input)
    except Exception as exc:
        raise AgentConfigError(
            f"configure_session of agent {agent.id!r} raised {type(exc).__name__}: {exc}"
        ) from exc
    if isinstance(result, SessionConfig):
        config = result
    elif isinstance(result, dict):
        try:
            config = SessionConfig.model_validate(result)
        except ValidationError as exc:
            raise AgentConfigError(
                f"configure_session of agent {agent.id!r} returned an invalid session config: {exc}"
            ) from exc
    else:
        raise AgentConfigError(
            f"configure_session of agent {agent.id!r} returned {type(result).__name__}; expected a SessionConfig"
        )
    try:
        check_implemented(config)
    except ProviderNotAvailable as exc:
        raise AgentConfigError(f"agent {agent.id!r}: {exc}") from exc
    return config.model_copy(
        update={
            "session_data": dict(config.session_data),
            "initial_messages": [dict(message) for message in config.initial_messages],
        }
    )


__all__ = [
    "Agent",
    "AgentLoadError",
    "AgentConfigError",
    "EVENT_HANDLERS",
    "configure",
    "is_async_callable",
    "load_agent",
]

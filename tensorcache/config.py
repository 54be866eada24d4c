"""CacheConfig: the one description of a cache, as plain values a user can keep in a config file.

Its fields and their defaults are the only ones: ``TensorCache(config)`` (or ``TensorCache(**fields)``)
opens what it describes, and the search driver's flags default to them. ``CacheConfig.from_dict`` /
``to_dict`` round-trip a JSON/YAML/TOML mapping; ``from_url`` reads the same fields from one string
(``tensorcache://?memory=1GB&disk=/scratch/cache.lmdb&policy=lru``), where keys the chosen policy declares
as options (``Policy.options``, e.g. ``window``) are its options. Every value is checked here, once. The
config knows nothing of who uses it (a search driver embeds it as is; the cache imports it, not the reverse).
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .keys import check_namespace
from .policies import POLICIES, Policy, make_policy
from .sizes import parse_size, shared_capacity
from .tiers.redis import check_url

URL_SCHEME = "tensorcache"
NO_DISK = "none"  # ``disk="none"`` says "no disk tier" in a config file, where None may mean "not given"
SIZES = {"memory": "memory size", "disk_capacity": "disk capacity", "redis_capacity": "redis capacity",
         "device_memory": "device memory size"}


@dataclass(frozen=True)
class CacheConfig:
    """What a ``TensorCache`` is built from, with the defaults; ``policy_options`` go to the policy (a name,
    a Policy subclass, or an instance each tier gets a copy of)."""

    memory: int | str = "2GB"
    disk: str | os.PathLike | None = None
    disk_capacity: int | str = "20GB"
    redis: str | None = None
    redis_capacity: int | str = "100GB"
    policy: str | type | Policy = "donor-window"
    policy_options: Mapping[str, Any] = field(default_factory=dict)
    namespace: str = "default"
    redis_required: bool = False
    pinned: bool = False
    verify_memory: bool = False
    device_memory: int | str = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "policy_options", dict(self.policy_options))
        self.check()

    def check(self) -> None:
        """Raise ValueError naming a bad size, a malformed Redis URL, an unknown policy or an option the policy
        does not declare."""
        for name, what in SIZES.items():
            parse_size(getattr(self, name), what=what)
        shared_capacity(self.disk_capacity, self.disk_path, what=SIZES["disk_capacity"])
        shared_capacity(self.redis_capacity, self.redis, what=SIZES["redis_capacity"])
        if self.redis is not None:
            check_url(self.redis)
        unknown = set(self.policy_options) - set(policy_options(self.policy))
        if unknown and isinstance(self.policy, str):  # a class given by the user names bad options itself
            raise ValueError(f"policy {self.policy!r} takes no option(s) {sorted(unknown)}; it declares "
                             f"{list(policy_options(self.policy)) or 'none'}")
        try:
            make_policy(self.policy, **self.policy_options)  # the policy names a bad option value itself
        except TypeError as exc:  # a required option is missing
            raise ValueError(f"policy {self.policy!r} cannot be built from options {self.policy_options}: {exc}") \
                from None
        check_namespace(self.namespace)

    @property
    def disk_path(self) -> str | None:
        """The LMDB path, or None for no disk tier (None or ``"none"``)."""
        if self.disk is None or str(self.disk).lower() in ("", NO_DISK):
            return None
        return os.fspath(self.disk)

    def takes(self, option: str) -> bool:
        """Whether the configured policy declares ``option`` (e.g. ``window``)."""
        return option in policy_options(self.policy)

    def with_options(self, **options: Any) -> CacheConfig:
        """A copy whose policy options are updated with ``options``."""
        return replace(self, policy_options={**self.policy_options, **options})

    def scaled(self, factor: float) -> CacheConfig:
        """A copy with every capacity multiplied by ``factor`` (e.g. for payloads scaled down alike)."""
        return replace(self, **{name: int(parse_size(getattr(self, name), what=what) * factor)
                                for name, what in SIZES.items()})

    def shared_only(self) -> CacheConfig:
        """A copy without the process-local tiers (memory, device): a view of what the shared tiers hold."""
        if self.disk_path is None and self.redis is None:
            raise ValueError("a view of the shared tiers needs a disk or redis tier")
        return replace(self, memory=0, device_memory=0)

    def capacities(self) -> dict[str, int]:
        """Each tier's capacity in bytes, by field name (0: no such tier for memory and device memory)."""
        return {name: parse_size(getattr(self, name), what=what) for name, what in SIZES.items()}

    def to_dict(self) -> dict[str, Any]:
        """Plain values (str, int, bool, None, a dict of options) for a config file."""
        return {f.name: dict(v) if isinstance(v := getattr(self, f.name), Mapping) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CacheConfig:
        """The config a ``to_dict`` mapping describes; ValueError names any unknown key."""
        return cls._of(values, ValueError, 4)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> CacheConfig:
        """The config of keyword settings (``TensorCache(memory=..., ...)``); TypeError names an unknown one,
        as a call would; ``policy_kwargs`` is read as ``policy_options`` with a DeprecationWarning."""
        return cls._of(settings, TypeError, 5)

    @classmethod
    def _of(cls, values: Mapping[str, Any], unknown_error: type[Exception], caller: int) -> CacheConfig:
        """The config of ``values``; ``unknown_error`` for an unknown name; ``caller``: the user's frame."""
        values = dict(values)
        if "policy_kwargs" in values:
            values["policy_options"] = deprecated_options(values.pop("policy_kwargs"), values.get("policy_options"),
                                                          caller)
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise unknown_error(f"unknown cache setting(s) {sorted(unknown)}; known: {[f.name for f in fields(cls)]}")
        if values.get("policy_options") is None:
            values.pop("policy_options", None)
        return cls(**values)

    @classmethod
    def from_url(cls, url: str) -> CacheConfig:
        """``tensorcache://?key=value&...``: the fields by name, policy options flat; values percent-encoded."""
        parts = urlsplit(url)
        if parts.scheme != URL_SCHEME or parts.netloc or parts.path not in ("", "/") or parts.fragment:
            raise ValueError(f"bad cache URL {url!r}: expected {URL_SCHEME}://?memory=2GB&policy=lru&...")
        settings: dict[str, Any] = {}
        for key, text in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)):
            if key in settings:
                raise ValueError(f"bad cache URL {url!r}: {key!r} given twice")
            settings[key] = text
        names = {f.name: f for f in fields(cls)}
        if "policy_options" in settings:
            raise ValueError(f"bad cache URL {url!r:.200}: policy_options is not a URL setting; give the policy's "
                             f"options by name (e.g. window=50)")
        options = {k: _option_value(settings.pop(k)) for k in list(settings) if k not in names}
        typed = {k: _field_value(names[k], v) for k, v in settings.items()}
        return cls(**typed, policy_options=options)


def deprecated_options(policy_kwargs: Mapping[str, Any] | None, policy_options: Mapping[str, Any] | None,
                       stacklevel: int = 3) -> Mapping[str, Any] | None:
    """The policy options given under the old name ``policy_kwargs`` (with a DeprecationWarning pointing
    ``stacklevel`` frames up); ValueError when both names are given."""
    warnings.warn("policy_kwargs is deprecated; use policy_options", DeprecationWarning, stacklevel=stacklevel)
    if policy_options is not None and policy_kwargs is not None:
        raise ValueError("give policy_options only (policy_kwargs is its deprecated name), not both")
    return policy_kwargs


def policy_options(policy: str | type | Policy) -> tuple[str, ...]:
    """The options a policy (by name, class or instance) declares; ValueError for an unknown name."""
    if isinstance(policy, str):
        if policy not in POLICIES:
            raise ValueError(f"unknown policy {policy!r}; known: {', '.join(sorted(POLICIES))}")
        policy = POLICIES[policy]
    return tuple(policy.options)


def _field_value(f: Field, text: str) -> Any:
    """A URL value as the field wants it: booleans from true/false, None from an empty value."""
    if f.type == "bool":
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"cache setting {f.name} must be true or false, got {text!r}")
        return text.lower() in ("true", "1")
    return None if text == "" and f.default is None else text


def _option_value(text: str) -> Any:
    """A URL policy option: an int, a float, true/false or none when it reads as one, else the string."""
    for parse in (int, float):
        try:
            return parse(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)

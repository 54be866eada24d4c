"""CacheConfig: what a TensorCache is built from, as plain values a user can keep in a config file.

``CacheConfig.from_dict`` / ``to_dict`` round-trip a JSON/YAML/TOML mapping; ``from_url`` reads the same
fields from one string (``tensorcache://?memory=1GB&disk=/scratch/cache.lmdb&policy=lru``), where keys the
chosen policy declares as options (``Policy.options``, e.g. ``window``) are its options. ``open()`` builds
the cache. The config knows nothing of who uses it (a search driver embeds it as is).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import Field, dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from .policies import POLICIES, Policy, make_policy
from .keys import check_namespace
from .sizes import parse_size, shared_capacity

if TYPE_CHECKING:
    from .cache import TensorCache

URL_SCHEME = "tensorcache"
NO_DISK = "none"  # ``disk="none"`` says "no disk tier" in a config file, where None may mean "not given"
SIZES = {"memory": "memory size", "disk_capacity": "disk capacity", "redis_capacity": "redis capacity",
         "device_memory": "device memory size"}


@dataclass(frozen=True)
class CacheConfig:
    """The arguments of ``TensorCache(...)``, with its defaults; ``policy_options`` go to the policy."""

    memory: int | str = "2GB"
    disk: str | None = None
    disk_capacity: int | str = "20GB"
    redis: str | None = None
    redis_capacity: int | str = "100GB"
    policy: str = "donor-window"
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
        """Raise ValueError naming a bad size, an unknown policy or an option the policy does not declare."""
        for name, what in SIZES.items():
            parse_size(getattr(self, name), what=what)
        shared_capacity(self.disk_capacity, self.disk_path, what=SIZES["disk_capacity"])
        shared_capacity(self.redis_capacity, self.redis, what=SIZES["redis_capacity"])
        unknown = set(self.policy_options) - set(policy_options(self.policy))
        if unknown:
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

    def open(self) -> TensorCache:
        """Build the TensorCache this config describes."""
        from .cache import TensorCache

        return TensorCache(memory=self.memory, disk=self.disk_path, disk_capacity=self.disk_capacity,
                           redis=self.redis, redis_capacity=self.redis_capacity, policy=self.policy,
                           namespace=self.namespace, policy_kwargs=self.policy_options or None,
                           redis_required=self.redis_required, pinned=self.pinned,
                           verify_memory=self.verify_memory, device_memory=self.device_memory, device=self.device)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (str, int, bool, None, a dict of options) for a config file."""
        return {f.name: dict(v) if isinstance(v := getattr(self, f.name), Mapping) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CacheConfig:
        """The config a ``to_dict`` mapping describes; ValueError names any unknown key."""
        unknown = set(values) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown cache setting(s) {sorted(unknown)}; known: {[f.name for f in fields(cls)]}")
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

"""What every listener needs: the settings, the database engine, the rate limiter."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine

from bot.ratelimit import RateLimiter
from bot.redaction import redact
from flywheel.settings import Settings
from storage.db import make_engine


@dataclass
class Services:
    settings: Settings
    engine: Engine
    limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.settings.rate_limit_per_minute)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Services":
        return cls(settings, make_engine(settings.database_url))

    def storable(self, text: str) -> str:
        """Text as it may be stored: redacted when the `pii_redaction` setting is on."""
        return redact(text) if self.settings.pii_redaction else text

"""Optional PII redaction (setting `pii_redaction`): emails, phone numbers, keys and tokens out of stored text."""

from __future__ import annotations

import re

# Order matters: tokens first, so that a key containing digits is not half-taken as a phone number.
_PATTERNS = [
    ("[TOKEN]", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}|\bxapp-[A-Za-z0-9-]{10,}")),  # Slack
    ("[TOKEN]", re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}")),  # OpenAI-style and Stripe keys
    ("[TOKEN]", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{20,}|\bgithub_pat_[A-Za-z0-9_]{20,}")),  # GitHub
    ("[TOKEN]", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),  # AWS access key ids
    ("[TOKEN]", re.compile(r"\bAIza[A-Za-z0-9_-]{35}\b")),  # Google API keys
    ("[TOKEN]", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")),  # JWTs
    ("Bearer [TOKEN]", re.compile(r"\bBearer\s+[A-Za-z0-9._~+/=-]{16,}", re.IGNORECASE)),
    ("[EMAIL]", re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")),
]
_PHONE = re.compile(r"(?<![\w.])\+?\(?\d[\d ()./-]{7,}\d(?![\w.])")
PHONE_MIN_DIGITS = 9  # fewer digits are more likely dates, versions or amounts


def _phone(match: re.Match) -> str:
    digits = sum(c.isdigit() for c in match.group())
    return "[PHONE]" if digits >= PHONE_MIN_DIGITS else match.group()


def redact(text: str) -> str:
    for replacement, pattern in _PATTERNS:
        text = pattern.sub(replacement, text)
    return _PHONE.sub(_phone, text)


def redact_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{**message, "content": redact(message["content"])} for message in messages]

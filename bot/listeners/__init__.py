"""All listeners, registered on one app; one module per kind of Slack request."""

from __future__ import annotations

import logging

from slack_bolt import App, BoltResponse
from sqlalchemy.exc import SQLAlchemyError

from bot.listeners import actions, commands, events, views
from bot.services import Services

MALFORMED = (KeyError, IndexError, TypeError, ValueError, AttributeError)


def refuse_malformed(error: Exception, logger: logging.Logger) -> BoltResponse | None:
    """A signed request whose payload lacks what its type promises gets 400, without a traceback in the
    log; anything else (the database down, say) stays a 500, so that Slack delivers an event again."""
    if isinstance(error, MALFORMED) and not isinstance(error, SQLAlchemyError):
        logger.warning("refused a malformed Slack request: %s: %s", type(error).__name__, error)
        return BoltResponse(status=400, body="malformed request")
    logger.error("a Slack request failed", exc_info=error)
    return None


def register_listeners(app: App, services: Services) -> None:
    for module in (events, actions, views, commands):
        module.register(app, services)
    app.error(refuse_malformed)

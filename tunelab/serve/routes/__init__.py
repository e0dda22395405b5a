"""The server's routers; :func:`tunelab.serve.app.create_app` includes every one in :data:`ROUTERS`.

A new page or API (the vote page, the demo) is a module with an ``APIRouter`` listed here;
routes get the shared model, worker and metrics from :func:`tunelab.serve.state.server_state`.
"""

from __future__ import annotations

from fastapi import APIRouter

from tunelab.serve.routes import chat, completions, health, models

ROUTERS: tuple[APIRouter, ...] = (health.router, models.router, chat.router, completions.router)

"""The OpenAI-compatible server (transport only: a :class:`Backend` is injected).

    from tunelab.infer import load_engine
    from tunelab.serve import ServerSettings, create_app, run_server

    run_server(create_app(load_engine("tiny"), ServerSettings(api_key="secret")), port=8000)
"""

from tunelab.serve.app import ServerSettings, create_app
from tunelab.serve.backend import Backend
from tunelab.serve.guardrails import GUARDRAILS, Guardrail, Verdict, register_guardrail
from tunelab.serve.run import ServerThread, run_server

__all__ = [
    "GUARDRAILS",
    "Backend",
    "Guardrail",
    "ServerSettings",
    "ServerThread",
    "Verdict",
    "create_app",
    "register_guardrail",
    "run_server",
]

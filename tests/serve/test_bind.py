"""``tunelab serve`` refuses a non-loopback --host without --api-key unless --insecure-no-auth.

Nothing here binds a socket: ``run_server`` is replaced by a recorder, and the app it would
have served is exercised in-process (starlette's TestClient), never over a network.
"""

from __future__ import annotations

import pytest
from starlette.testclient import TestClient

from tunelab.errors import ServeError
from tunelab.serve.bind import check_bind, is_loopback

LOOPBACK = ["127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost", "LocalHost"]
EXPOSED = ["0.0.0.0", "::", "192.168.1.5", "10.0.0.1", "::ffff:10.0.0.1", "my-box.example.com", ""]


@pytest.mark.parametrize("host", LOOPBACK)
def test_loopback_needs_no_key(host):
    assert is_loopback(host)
    check_bind(host, None)


@pytest.mark.parametrize("host", EXPOSED)
def test_exposed_host_needs_a_key_or_the_explicit_opt_out(host):
    assert not is_loopback(host)
    with pytest.raises(ServeError, match=r"--api-key KEY .*--insecure-no-auth") as err:
        check_bind(host, None)
    assert f"--host {host} " in str(err.value) and "\n  fix: " in str(err.value)
    check_bind(host, "a-key")
    check_bind(host, None, insecure_no_auth=True)


@pytest.fixture()
def served(monkeypatch):
    """Replace run_server with a recorder; count engine loads (a refusal must come before one)."""
    import tunelab.infer
    import tunelab.serve

    calls: dict = {"loads": 0}
    real_load = tunelab.infer.load_engine

    def load(*args, **kwargs):
        calls["loads"] += 1
        return real_load(*args, **kwargs)

    def run(app, host, port, log_level="warning"):
        calls.update(app=app, host=host, port=port)

    monkeypatch.setattr(tunelab.infer, "load_engine", load)
    monkeypatch.setattr(tunelab.serve, "run_server", run)
    monkeypatch.delenv("TUNELAB_API_KEY", raising=False)
    return calls


def test_cli_refuses_0000_without_a_key_before_loading_the_model(served, capsys):
    from tunelab.cli.main import main

    assert main(["serve", "tiny", "--host", "0.0.0.0", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "error: --host 0.0.0.0 would let anyone" in err and "--insecure-no-auth" in err
    assert served["loads"] == 0 and "app" not in served


def test_cli_serves_0000_with_a_key_or_the_opt_out(served, capsys, monkeypatch):
    from tunelab.cli.main import main

    assert main(["serve", "tiny", "--host", "0.0.0.0", "--port", "8123", "--device", "cpu",
                 "--insecure-no-auth", "--max-prompts", "2"]) == 0
    assert (served["host"], served["port"]) == ("0.0.0.0", 8123)
    assert "warning: --insecure-no-auth: listening on 0.0.0.0 without --api-key" in capsys.readouterr().err
    open_app = TestClient(served["app"])
    assert open_app.get("/v1/models").status_code == 200
    too_many = open_app.post("/v1/completions", json={"model": "tiny", "prompt": ["a", "b", "c"], "max_tokens": 1})
    assert too_many.status_code == 400 and "--max-prompts 2" in too_many.json()["error"]["message"]

    monkeypatch.setenv("TUNELAB_API_KEY", "k")
    assert main(["serve", "tiny", "--host", "0.0.0.0", "--device", "cpu"]) == 0
    keyed = TestClient(served["app"])
    assert keyed.get("/v1/models").status_code == 401
    assert keyed.get("/v1/models", headers={"Authorization": "Bearer k"}).status_code == 200

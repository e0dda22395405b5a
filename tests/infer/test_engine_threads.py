"""The engine lock under a server that moves one stream between worker threads (gradio does)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from tunelab.infer import SamplingParams
from tunelab.infer.engine import Engine


def request_in_a_thread(engine, prompt, params) -> tuple[threading.Thread, threading.Event]:
    """Start a whole request on its own thread; the event is set once it has finished."""
    done = threading.Event()

    def run() -> None:
        "".join(engine.stream("tiny", prompt, params))
        done.set()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    return worker, done


def test_a_stream_advanced_and_closed_on_other_threads_releases_the_engine(lm, tiny_tokenizer, prompts):
    """Start a stream on one thread, advance it on a second, close it on a third: the next request
    must get the lock (an owner-bound RLock raised "cannot release un-acquired lock" here)."""
    engine = Engine(lm, tiny_tokenizer, {"tiny": None})
    params = SamplingParams(max_new_tokens=4, temperature=0.0)
    stream = engine.stream("tiny", prompts[0], params)
    with ThreadPoolExecutor(max_workers=1) as a, ThreadPoolExecutor(max_workers=1) as b:
        first = a.submit(next, iter(stream)).result()
        second = b.submit(next, iter(stream)).result()
        b.submit(stream.close).result()
    assert isinstance(first, str) and isinstance(second, str)
    worker, done = request_in_a_thread(engine, prompts[0], params)
    worker.join(timeout=60)
    assert done.is_set(), "the engine lock was never released by the closed stream"


def test_a_stream_holds_the_engine_until_it_ends(lm, tiny_tokenizer, prompts):
    """While one stream is open, another request waits; it runs once the first is exhausted."""
    engine = Engine(lm, tiny_tokenizer, {"tiny": None})
    params = SamplingParams(max_new_tokens=3, temperature=0.0)
    stream = iter(engine.stream("tiny", prompts[1], params))
    next(stream)
    worker, finished = request_in_a_thread(engine, prompts[2], params)
    assert not finished.wait(timeout=1.0)
    list(stream)
    worker.join(timeout=60)
    assert finished.is_set()

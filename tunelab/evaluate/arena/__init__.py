"""The arena: answers from several models, judged pairwise (reward model, LLM judge or people), rated.

* :mod:`~tunelab.evaluate.arena.ratings` — online Elo, Bradley–Terry fit, bootstrap intervals, win rates
* :mod:`~tunelab.evaluate.arena.judges` — the judge registry and the judge's own report (position bias)
* :mod:`~tunelab.evaluate.arena.run` — ``tunelab arena run``
* :mod:`~tunelab.evaluate.arena.store`, :mod:`~tunelab.evaluate.arena.web` — the human-vote page and its SQLite store
* :mod:`~tunelab.evaluate.arena.export` — votes → preference rows for ``method: dpo``
"""

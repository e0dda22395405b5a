"""Evaluation: test suites, perplexity, the lm-eval harness bridge, the arena, the human-vote page, the demo.

Every method opens its models with :func:`tunelab.evaluate.models.open_model` (a name, folder,
run, ``.gguf`` file or OpenAI-compatible URL). See docs/evaluation.md for which method answers
which question.
"""

from tunelab.evaluate.models import EvalModel, open_model

__all__ = ["EvalModel", "open_model"]

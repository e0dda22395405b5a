"""Silence third-party noise that says nothing actionable to a tunelab user.

bitsandbytes warns on every import that an optional hub-downloaded CPU kernel is missing (we
run offline by design and its built-in CPU path is used); transformers draws a progress bar
for every tiny weight load; peft/transformers emit deprecation warnings about each other.
"""

from __future__ import annotations

import logging
import warnings

_DONE = False


def quiet_third_party() -> None:
    global _DONE
    if _DONE:
        return
    _DONE = True
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    warnings.filterwarnings("ignore", message="Position ids are not supported for parameter efficient tuning")
    warnings.filterwarnings("ignore", message=".*MatMul8bitLt: inputs will be cast.*")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass

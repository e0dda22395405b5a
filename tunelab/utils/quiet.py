"""Silence third-party noise that says nothing actionable to a tunelab user.

bitsandbytes warns on every import that an optional hub-downloaded CPU kernel is missing (we
run offline by design and its built-in CPU path is used); transformers draws a progress bar
for every tiny weight load; peft/transformers emit deprecation warnings about each other.

One transformers warning is never noise: the load report that says a checkpoint does not fit
the model (weights not used, weights newly initialized because missing, size mismatches).
A model loaded that way answers with random layers, so :class:`LoadReportFilter` turns the
report into ``warning:`` lines naming each tensor, while the rest stays at ERROR.
"""

from __future__ import annotations

import logging
import re
import warnings

_DONE = False
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
#: the statuses of transformers' load report (``utils/loading_report.py``) → what they mean here
LOAD_PROBLEMS = {
    "UNEXPECTED": "in the checkpoint but not used by the model",
    "MISSING": "missing from the checkpoint, newly initialized (random)",
    "MISMATCH": "has the wrong shape in the checkpoint, newly initialized (random)",
    "CONVERSION": "could not be converted",
}


def load_report_lines(message: str) -> list[str]:
    """One line per tensor of a transformers ``LOAD REPORT`` message; [] for any other message.

    The report is a table (``key | STATUS | details``) after a ``NAME LOAD REPORT from: PATH``
    line; terminal colours are stripped.
    """
    text = _ANSI.sub("", message)
    head, _, table = text.partition("\n")
    model, sep, source = head.partition(" LOAD REPORT from: ")
    if not sep:
        return []
    lines = []
    for row in table.splitlines():
        cells = [c.strip() for c in row.split(" | ")]
        if len(cells) >= 2 and cells[1] in LOAD_PROBLEMS:
            details = " ".join(c for c in cells[2:] if c)
            lines.append(f"{model.strip()} from {source.strip()}: {cells[0]} {LOAD_PROBLEMS[cells[1]]}"
                         + (f" ({details})" if details else ""))
    return lines


class LoadReportFilter(logging.Filter):
    """On transformers' ``modeling_utils`` logger: a load report becomes tunelab warnings, other
    records below ERROR are dropped (the quiet the rest of transformers gets)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR:
            return True
        lines = load_report_lines(record.getMessage())
        if lines:
            from tunelab.utils.log import logger

            for line in lines:
                logger.warning(line)
        return False


def keep_load_reports() -> None:
    """Let transformers' load report through :class:`LoadReportFilter` (idempotent)."""
    hf_logger = logging.getLogger("transformers.modeling_utils")
    hf_logger.setLevel(logging.WARNING)  # above the library's ERROR, so the report reaches the filter
    if not any(isinstance(f, LoadReportFilter) for f in hf_logger.filters):
        hf_logger.addFilter(LoadReportFilter())


def quiet_third_party() -> None:
    global _DONE
    if _DONE:
        return
    _DONE = True
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    # transformers 5 renamed it activation_checkpointing_enable; tunelab calls the new name (models/load.py),
    # peft's prepare_model_for_kbit_training (QLoRA) still calls the old one
    warnings.filterwarnings("ignore", message=".*gradient_checkpointing_enable.* is deprecated", category=FutureWarning)
    warnings.filterwarnings("ignore", message="Position ids are not supported for parameter efficient tuning")
    warnings.filterwarnings("ignore", message=".*MatMul8bitLt: inputs will be cast.*")
    # tunelab asks for use_reentrant=False where it enables checkpointing (models/load.py, adapters.py); a
    # checkpoint reached on a QLoRA base still warns once per layer and step (source not found yet)
    warnings.filterwarnings("ignore", message="torch.utils.checkpoint: the use_reentrant parameter should be passed")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        keep_load_reports()
    except ImportError:  # pragma: no cover
        pass

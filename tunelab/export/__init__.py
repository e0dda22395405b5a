"""Export a finished run: merged Hugging Face folder, GGUF + Ollama Modelfile, bitsandbytes folder,
and the round-trip check that the export answers like the trained run."""

from tunelab.export.formats import FORMATS, ExportOptions, export
from tunelab.export.merge import ExportResult

__all__ = ["FORMATS", "ExportOptions", "ExportResult", "export"]

"""Small shared helpers (console, logging, IO)."""

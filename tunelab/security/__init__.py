"""Security stage: pattern detectors, serve guardrails, dataset scan and red-team probes.

Why a package of its own: the same detectors (PII, secrets, special tokens, injection phrases,
encoded payloads) guard the server's inputs and outputs, scan training data for poisoning and
judge red-team attempts, so they live once here, torch-free, and the other stages import them.
"""

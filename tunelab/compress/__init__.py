"""Make a model cheaper to serve: pruning (magnitude, depth, width) with a short recovery run, and
draft models for speculative decoding. Modules import torch lazily; this package imports nothing."""

"""Generation: KV cache, sampling, streaming, batching, speculative decoding, context caching.

Public API::

    from tunelab.infer import Generator, SamplingParams, Speculation, PrefixCache, load_engine

    gen = Generator(model, tokenizer, prefix_cache=PrefixCache())
    result = gen.generate(prompt_ids, SamplingParams(max_new_tokens=64, temperature=0.7, seed=1))
    for delta in gen.stream(prompt_ids, SamplingParams(), speculation=Speculation("prompt_lookup")):
        print(delta, end="")
"""

from tunelab.infer.batch import generate_batch
from tunelab.infer.cache import KVState, PrefixCache
from tunelab.infer.decode import GenerationStream, Generator
from tunelab.infer.engine import ChatMessage, Engine
from tunelab.infer.load import load_engine
from tunelab.infer.logprobs import token_logprobs
from tunelab.infer.speculative import DRAFTERS, lookup_ngram, verify
from tunelab.infer.types import GenerationResult, SamplingParams, Speculation, Timings, TokenLogprob

__all__ = [
    "DRAFTERS",
    "ChatMessage",
    "Engine",
    "GenerationResult",
    "GenerationStream",
    "Generator",
    "KVState",
    "PrefixCache",
    "SamplingParams",
    "Speculation",
    "Timings",
    "TokenLogprob",
    "generate_batch",
    "load_engine",
    "lookup_ngram",
    "token_logprobs",
    "verify",
]

"""Tokenization over HTTP, as vLLM serves it: POST /tokenize, POST /detokenize, GET /tokenizer_info.

lm-evaluation-harness looks for these routes and, finding them, tokenizes through the server (its `remote`
tokenizer backend) instead of downloading a tokenizer: its requests then hold exactly the ids this server
uses. Text is encoded as /v1/completions encodes a string prompt (`encode_text`).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from ..tokenizer import Tokenizer
from .context import Context
from .errors import ApiError
from .logprobs import decoded
from .openapi import errors
from .responses import Detokenized, TokenizerInfo, Tokens
from .schemas import DetokenizeRequest, TokenizeRequest

BOS = "<|bos|>"


def encode_text(tokenizer: Tokenizer, text: str, add_bos: bool = True) -> tuple[list[int], bool]:
    """(ids, whether <|bos|> was put in front). Special tokens are recognised by name, as a raw prompt for a
    chat model needs them; <|bos|> comes first, as nanochat trains on documents, unless the text starts with it."""
    ids = tokenizer.encoding.encode(text, allowed_special="all")
    if add_bos and ids[:1] != [tokenizer.bos_token_id]:
        return [tokenizer.bos_token_id, *ids], True
    return ids, False


def check_ids(tokenizer: Tokenizer, ids: list[int], param: str) -> None:
    """400 for an id outside the vocabulary."""
    bad = next((i for i in ids if i >= tokenizer.vocab_size), None)
    if bad is not None:
        raise ApiError(400, f"{param}: token id {bad} is not in the vocabulary (0 to {tokenizer.vocab_size - 1})",
                       param=param)  # fmt: skip


def tokenizer_router(ctx: Context) -> APIRouter:
    router = APIRouter(dependencies=[Depends(ctx.require_key)])

    def tokenizer() -> Tokenizer:
        ctx.check_ready()
        return ctx.pool.bot.tokenizer

    @router.post("/tokenize", response_model=Tokens, responses=errors(400, 413, 503))
    async def tokenize(body: TokenizeRequest):
        tok = tokenizer()
        ids, _ = await asyncio.to_thread(encode_text, tok, body.prompt, body.add_special_tokens)
        return {"count": len(ids), "max_model_len": ctx.pool.bot.config.sequence_len, "tokens": ids}

    @router.post("/detokenize", response_model=Detokenized, responses=errors(400, 413, 503))
    async def detokenize(body: DetokenizeRequest):
        tok = tokenizer()
        check_ids(tok, body.tokens, "tokens")
        return {"prompt": await asyncio.to_thread(decoded, tok, body.tokens)}

    @router.get("/tokenizer_info", response_model=TokenizerInfo, responses=errors(503))
    async def tokenizer_info():
        tok = tokenizer()
        return {"tokenizer_class": "nanochat", "bos_token": BOS, "eos_token": BOS,
                "model_max_length": ctx.pool.bot.config.sequence_len, "vocab_size": tok.vocab_size}  # fmt: skip

    return router

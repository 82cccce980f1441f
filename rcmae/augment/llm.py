"""Prompt generation through any OpenAI-compatible server (or templates without one)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import yaml

from rcmae.augment.prompts import (
    PAPER_PROMPTS,
    PromptGenerationError,
    PromptLibraryError,
    check_prompt_text,
    logger,
    normalize,
    template_prompts,
)

DEFAULT_MODEL = "gpt-4o-mini"

SYSTEM_MESSAGE = (
    "You write short text prompts for a text-to-audio diffusion model that adds realistic factory background "
    "noise to recordings of industrial machines. Answer with a JSON list of strings only, no commentary."
)
USER_TEMPLATE = (
    "Write {n} new, varied prompts, each one sentence of 8 to 30 words, in the style of these examples:\n"
    "{examples}\n"
    "Each prompt starts with 'Add', names a factory noise and the machines or place that make it. "
    "Do not repeat any of these: {avoid}.\nReturn exactly a JSON list of {n} strings."
)


def _settings(path: str | os.PathLike | None) -> dict:
    """The ``llm:`` block of the workspace settings file (``model``, ``base_url``, ``api_key``), if any."""
    if path is None:
        from rcmae.workspace import Workspace

        path = Workspace.default().settings
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise PromptLibraryError(f"{path}: not valid YAML; fix the settings file") from err
    llm = data.get("llm") if isinstance(data, dict) else None
    return llm if isinstance(llm, dict) else {}


def parse_llm_reply(content: str | None, where: str | None = None) -> list:
    """Extract the JSON list from a chat reply (a bare list, a ```json fence, or ``{"prompts": [...]}``).

    ``where`` (the server, credentials removed) is named in the error messages.
    """
    llm = f"the LLM at {where}" if where else "the LLM"
    if not content or not content.strip():
        raise PromptGenerationError(f"{llm} answered with an empty message; try again or use --template")
    text = content.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, flags=re.S)
    if fence:
        text = fence.group(1).strip()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        preview = re.sub(r"\s+", " ", content.strip())[:60]
        raise PromptGenerationError(f"{llm} replied with a message that is not a JSON list of prompts "
                                    f"(it starts {preview!r}); "
                                    f"try again, another --model, or --template") from err
    if isinstance(data, dict) and isinstance(data.get("prompts"), list):
        data = data["prompts"]
    if not isinstance(data, list):
        raise PromptGenerationError(f"{llm} replied with JSON but not a list (got {type(data).__name__}); "
                                    f"try again, another --model, or --template")
    return data


def validate_prompts(items: list, existing: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """Keep one-line string prompts of MIN_LEN..MAX_LEN characters that are new; returns (kept, reasons dropped)."""
    seen = {normalize(t) for t in existing}
    kept, dropped = [], []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            item = item.get("text", item.get("prompt"))
        try:
            text = check_prompt_text(item, field=f"item {i}")
        except PromptLibraryError as err:
            dropped.append(str(err))
            continue
        if normalize(text) in seen:
            dropped.append(f"item {i}: duplicate")
            continue
        seen.add(normalize(text))
        kept.append(text)
    return kept, dropped


def redact_url(url: str | None) -> str:
    """``url`` safe to print or save: no ``user:password@`` and no query values (``?key=...`` becomes ``?key=***``)."""
    if not url:
        return "api.openai.com"
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host + (f":{port}" if port else "")
    query = urlencode([(k, "***") for k, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _reply_content(raw, where: str) -> str | None:
    """The assistant message of a raw chat-completion HTTP reply; one clear line when the server sent
    something else (an HTML page, invalid JSON, JSON without choices)."""
    text = raw.text or ""
    kind = raw.headers.get("content-type", "").split(";")[0].strip() or "no content type"
    preview = re.sub(r"\s+", " ", text.strip())[:60]
    if "html" in kind or text.lstrip()[:15].lower().startswith(("<!doctype html", "<html")):
        raise PromptGenerationError(
            f"the LLM at {where} sent an HTML page (HTTP {raw.status_code}, {kind}, starts {preview!r}), not a chat "
            "completion; check --base-url (an OpenAI-compatible API usually ends in /v1) or use --template")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise PromptGenerationError(
            f"the LLM at {where} sent invalid JSON (HTTP {raw.status_code}, {kind}: {err.msg} at char {err.pos}; "
            f"starts {preview!r}); check the server or use --template") from err
    try:
        return data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as err:
        raise PromptGenerationError(
            f"the LLM at {where} sent JSON that is not a chat completion (no choices[0].message; starts "
            f"{preview!r}); check --base-url and --model, or use --template") from err


# HTTP libraries log each request's full URL (credentials included) at INFO/DEBUG: quiet them during a call.
_HTTP_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2", "openai")


@contextlib.contextmanager
def _quiet_http_logs() -> Iterator[None]:
    saved = {name: logging.getLogger(name).level for name in _HTTP_LOGGERS}
    for name in _HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _call_with_deadline(fn, deadline: float, on_timeout):
    """Run ``fn()`` in a helper thread and wait at most until ``deadline`` (time.monotonic); then ``on_timeout()``
    (which closes the connection, so the helper ends too) and raise ``TimeoutError``."""
    import threading

    box: dict = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as err:  # handed to the caller's thread
            box["error"] = err

    worker = threading.Thread(target=run, daemon=True, name="rcmae-llm")
    worker.start()
    worker.join(max(0.0, deadline - time.monotonic()))
    if worker.is_alive():
        # Closing may wait for the stuck read: do it in the background, the caller returns now.
        threading.Thread(target=on_timeout, daemon=True, name="rcmae-llm-close").start()
        raise TimeoutError
    if "error" in box:
        raise box["error"]
    return box["value"]


def _llm_prompts(n: int, model: str, base_url: str | None, api_key: str, seed: int | None, timeout: float,
                 existing: list[str]) -> list[str]:
    """Ask the chat model; ``timeout`` bounds the whole call (all requests), not each network read."""
    deadline = time.monotonic() + timeout  # from the start: importing the client takes a while too
    import openai

    where = redact_url(base_url)
    client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)
    examples = "\n".join(f"- {t}" for t in PAPER_PROMPTS[:3])
    kept: list[str] = []
    timed_out = False
    try:
        for _ in range(3):  # validation may drop some items: ask again for the rest, at most three times
            want = n - len(kept)
            avoid = "; ".join((existing + kept)[-20:]) or "none"
            extra = {"seed": seed} if seed is not None else {}

            def ask(want: int = want, avoid: str = avoid, extra: dict = extra):
                raw = client.chat.completions.with_raw_response.create(
                    model=model,
                    messages=[{"role": "system", "content": SYSTEM_MESSAGE},
                              {"role": "user", "content": USER_TEMPLATE.format(n=want, examples=examples,
                                                                               avoid=avoid)}],
                    temperature=0.9,
                    **extra,
                )
                raw.http_response.read()  # the body too, within the deadline (a server may trickle it)
                return raw

            try:
                with _quiet_http_logs():
                    raw = _call_with_deadline(ask, deadline, client.close)
            except (TimeoutError, openai.APITimeoutError) as err:
                timed_out = True
                raise PromptGenerationError(f"the LLM at {where} did not answer within {timeout:g} s; raise "
                                            f"--timeout, check the server, or use --template") from err
            except openai.APIConnectionError as err:
                raise PromptGenerationError(f"could not reach the LLM at {where}; check --base-url / "
                                            f"OPENAI_BASE_URL, or use --template") from err
            except openai.AuthenticationError as err:
                raise PromptGenerationError(f"the LLM at {where} rejected the API key (HTTP 401); "
                                            f"check OPENAI_API_KEY") from err
            except openai.APIStatusError as err:
                raise PromptGenerationError(f"the LLM at {where} answered HTTP {err.status_code} for model "
                                            f"{model!r}; check --model, or use --template") from err
            content = _reply_content(raw.http_response, where)
            items = parse_llm_reply(content, where=where)
            new, dropped = validate_prompts(items, existing + kept)
            for reason in dropped:
                logger.info("dropped an LLM prompt: %s", reason)
            kept += new[:want]
            if len(kept) >= n or not new:
                break
    finally:
        if not timed_out:
            client.close()
    if not kept:
        raise PromptGenerationError(f"the LLM at {where} returned no usable prompts (all too short/long, multi-line "
                                    f"or duplicates); try again or use --template")
    return kept


def generate_prompts(n: int, model: str | None = None, base_url: str | None = None, api_key: str | None = None,
                     seed: int | None = None, use_llm: bool | None = None, timeout: float = 30,
                     existing: Iterable[str] = (),
                     settings: str | os.PathLike | None = None) -> tuple[list[str], str]:
    """Generate up to ``n`` new factory-noise prompts in the paper's style.

    Args:
        n: how many prompts to ask for.
        model, base_url, api_key: the OpenAI-compatible chat model; each falls back to the workspace
            ``settings.yaml`` ``llm:`` block, then ``OPENAI_MODEL`` / ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY``.
        seed: seeds the template generator (and is passed to the LLM, which may ignore it).
        use_llm: True = require the LLM, False = template generator, None = the LLM when a key or base URL is set.
        timeout: seconds to wait for the LLM (no retries).
        existing: texts to avoid (e.g. the library's); duplicates are dropped case/space-insensitively.
        settings: the settings file to read (default: the workspace's).

    Returns:
        ``(prompts, source)``: ``source`` is ``"template"`` or ``"llm:<model>@<server>"``. The LLM path may
        return fewer than ``n`` prompts when its answers fail validation.

    Raises:
        PromptGenerationError: the LLM timed out, was unreachable, or answered something unusable.
    """
    if not isinstance(n, int) or n < 1:
        raise PromptLibraryError(f"n={n!r}: ask for at least one prompt")
    existing = list(existing)
    conf = _settings(settings) if use_llm is not False else {}
    model = model or conf.get("model") or os.environ.get("OPENAI_MODEL") or DEFAULT_MODEL
    base_url = base_url or conf.get("base_url") or os.environ.get("OPENAI_BASE_URL") or None
    api_key = api_key or conf.get("api_key") or os.environ.get("OPENAI_API_KEY") or None
    if use_llm is None:
        use_llm = bool(api_key or base_url)
    if not use_llm:
        return template_prompts(n, seed=seed, existing=existing), "template"
    if not (api_key or base_url):
        raise PromptGenerationError("no LLM configured: set OPENAI_API_KEY (and OPENAI_BASE_URL for another server), "
                                    "or use the template generator")
    # Local OpenAI-compatible servers usually need no key, but the client insists on a non-empty one.
    prompts = _llm_prompts(n, model, base_url, api_key or "not-needed", seed, timeout, existing)
    return prompts, f"llm:{model}@{redact_url(base_url)}"

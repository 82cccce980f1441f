"""The factory-noise prompt library, and prompt generation by an LLM or a built-in template generator.

A library is a YAML file (default ``<workspace>/prompts.yaml``)::

    prompts:
      - {id: p1, text: "...", tags: [paper], notes: "...", created: "2026-...", used_by: [bank-a]}
    history:
      - {time: "...", event: added, id: p1, detail: ""}

It is created on first use, seeded with the paper's Table 1 prompts word for word (tags ``paper``,
``table1``); ``PromptLibrary.add_table1`` (``rcmae prompts add-paper``) adds them to an existing library.
``generate_prompts`` asks an OpenAI-compatible chat model for more (the model, base URL and key come
from arguments, the workspace ``settings.yaml`` or ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL``), or falls
back to a template generator driven by ``assets/prompt_vocabulary.yaml``. The API key is only ever
handed to the ``openai`` client: it is never written to the library, logs or run folders.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import yaml

from rcmae.files import atomic_write_text

logger = logging.getLogger(__name__)

MIN_LEN, MAX_LEN = 20, 300
DEFAULT_MODEL = "gpt-4o-mini"
VOCABULARY = Path(__file__).resolve().parents[1] / "assets" / "prompt_vocabulary.yaml"

# The paper's Table 1 ("Samples of retrieved prompts from ChatGPT", Zahedi et al., Algorithms 2023, 16(9), 431),
# word for word. A fresh library is seeded with these six, tagged "paper" and "table1".
TABLE1_PROMPTS: tuple[str, ...] = (
    "add sharp and metallic screeching sound created by metal-cutting saws in a fabrication workshop as they cut "
    "through various metal materials",
    "add rhythmic and pulsating buzzing sound produced by printing presses in a publishing house as they rapidly "
    "print and collate pages of books and magazines",
    "add continuous and powerful rumbling noise accompanied by the grinding and crushing of rocks in a mining quarry "
    "as large crushers pulverize rocks into smaller fragments",
    "add continuous and rhythmic clicking noise produced by injection molding machines in a plastic manufacturing "
    "facility as they shape molten plastic into various products",
    "add rhythmic and repetitive whirring noise accompanied by the sound of cutting tools in a woodworking shop as "
    "they shape and carve wood materials",
    "add continuous and powerful whirring noise accompanied by the sound of pneumatic tools in an automobile "
    "assembly line as vehicle parts are fastened",
)
# The default prompt set of banks and the LLM's examples: Table 1 itself.
PAPER_PROMPTS: tuple[str, ...] = TABLE1_PROMPTS
TABLE1_TAGS: tuple[str, ...] = ("paper", "table1")
TABLE1_NOTE = "paper Table 1 (verbatim)"

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


class PromptLibraryError(ValueError):
    """A prompt library file or request that cannot be used; the message names the file or field and the fix."""


class PromptGenerationError(ValueError):
    """The LLM could not be reached, timed out, or answered something that is not a JSON list of prompts."""


def normalize(text: str) -> str:
    """The form used to detect duplicates: lower case, single spaces, no trailing punctuation."""
    return re.sub(r"\s+", " ", text.strip().lower()).rstrip(" .!;,")


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An advisory lock beside the library, so concurrent bank shards marking prompts do not lose updates."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; a single writer is assumed there.
        yield
        return
    with open(path.with_name(f".{path.name}.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def check_prompt_text(text: object, field: str = "text") -> str:
    """Validate one prompt: a single line of MIN_LEN..MAX_LEN characters. Returns it stripped."""
    if not isinstance(text, str):
        raise PromptLibraryError(f"{field}: a prompt must be a string, got {type(text).__name__}")
    text = re.sub(r"[ \t]+", " ", text.strip())
    if "\n" in text or "\r" in text:
        raise PromptLibraryError(f"{field}: a prompt must be one line; remove the line breaks")
    if not MIN_LEN <= len(text) <= MAX_LEN:
        raise PromptLibraryError(f"{field}: a prompt must be {MIN_LEN}..{MAX_LEN} characters, got {len(text)}; "
                                 f"{'add detail' if len(text) < MIN_LEN else 'shorten it'}")
    return text


class PromptLibrary:
    """A YAML prompt library with tags, notes, the banks that used each prompt, and an event history.

    Every change re-reads the file under a lock and saves it atomically (temp file + ``os.replace``).

    Args:
        path: the YAML file; created and seeded with ``TABLE1_PROMPTS`` when it does not exist (an existing
            file is never changed on opening).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        with _locked(self.path):
            if not self.path.exists():
                created = _now()
                data = {
                    "prompts": [
                        {"id": f"p{i}", "text": text, "tags": list(TABLE1_TAGS), "notes": TABLE1_NOTE,
                         "created": created, "used_by": []}
                        for i, text in enumerate(TABLE1_PROMPTS, start=1)
                    ],
                    "history": [{"time": created, "event": "created", "id": "",
                                 "detail": "seeded with the paper's Table 1 (6 prompts)"}],
                }
                self._save(data)
            self._data = self._load()

    # ---------------------------------------------------------------- file
    def _load(self) -> dict:
        try:
            data = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        except yaml.YAMLError as err:
            raise PromptLibraryError(f"{self.path}: not valid YAML ({str(err).splitlines()[0]}); "
                                     f"fix the file or move it away to start a new library") from err
        if data is None:
            data = {"prompts": []}
        if not isinstance(data, dict) or not isinstance(data.get("prompts", []), list):
            raise PromptLibraryError(f"{self.path}: expected a mapping with 'prompts: [...]'; "
                                     f"fix the file or move it away to start a new library")
        prompts = data.setdefault("prompts", [])
        for i, item in enumerate(prompts):
            if not isinstance(item, dict) or "id" not in item or "text" not in item:
                raise PromptLibraryError(f"{self.path}: prompts[{i}] needs at least 'id' and 'text'; fix that entry")
            item["id"] = str(item["id"])
            item.setdefault("tags", [])
            item.setdefault("notes", "")
            item.setdefault("created", "")
            item["used_by"] = list(item.get("used_by") or [])
        data.setdefault("history", [])
        return data

    def _save(self, data: dict) -> None:
        atomic_write_text(self.path, yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120))

    @contextlib.contextmanager
    def _edit(self) -> Iterator[dict]:
        with _locked(self.path):
            data = self._load()
            yield data
            self._save(data)
            self._data = data

    @staticmethod
    def _find(data: dict, prompt_id: str) -> dict:
        for item in data["prompts"]:
            if item["id"] == str(prompt_id):
                return item
        known = ", ".join(p["id"] for p in data["prompts"]) or "none"
        raise PromptLibraryError(f"prompt id {prompt_id!r} not in the library (ids: {known}); "
                                 f"see 'rcmae prompts list'")

    # ---------------------------------------------------------------- reading
    def list(self, tag: str | None = None) -> list[dict]:
        """All prompts (copies), optionally only those carrying ``tag``."""
        self._data = self._load()
        return [dict(p) for p in self._data["prompts"] if tag is None or tag in p["tags"]]

    def get(self, prompt_id: str) -> dict:
        """One prompt by id."""
        return dict(self._find(self._load(), prompt_id))

    def texts(self) -> list[str]:
        """The prompt texts, in library order."""
        return [p["text"] for p in self.list()]

    def history(self, prompt_id: str | None = None) -> list[dict]:
        """Events (created/added/updated/removed/used), oldest first; only one prompt's when an id is given."""
        events = self._load()["history"]
        return [dict(e) for e in events if prompt_id is None or e.get("id") == str(prompt_id)]

    # ---------------------------------------------------------------- changing
    def add(self, text: str, tags: Iterable[str] = (), notes: str = "") -> dict:
        """Add a prompt; raises ``PromptLibraryError`` for a bad length or a duplicate (case/space-insensitive)."""
        text = check_prompt_text(text)
        with self._edit() as data:
            for item in data["prompts"]:
                if normalize(item["text"]) == normalize(text):
                    raise PromptLibraryError(f"text: already in the library as {item['id']}; edit that one instead")
            numbers = [int(m.group(1)) for p in data["prompts"] if (m := re.fullmatch(r"p(\d+)", p["id"]))]
            # Ids are never reused: the history also counts removed ones.
            numbers += [int(m.group(1)) for e in data["history"] if (m := re.fullmatch(r"p(\d+)", str(e.get("id"))))]
            item = {"id": f"p{max(numbers, default=0) + 1}", "text": text, "tags": list(tags), "notes": notes,
                    "created": _now(), "used_by": []}
            data["prompts"].append(item)
            data["history"].append({"time": item["created"], "event": "added", "id": item["id"], "detail": ""})
        return dict(item)

    def update(self, prompt_id: str, text: str | None = None, tags: Iterable[str] | None = None,
               notes: str | None = None) -> dict:
        """Change a prompt's text, tags or notes."""
        with self._edit() as data:
            item = self._find(data, prompt_id)
            changed = []
            if text is not None:
                text = check_prompt_text(text)
                for other in data["prompts"]:
                    if other is not item and normalize(other["text"]) == normalize(text):
                        raise PromptLibraryError(f"text: already in the library as {other['id']}")
                item["text"] = text
                changed.append("text")
            if tags is not None:
                item["tags"] = list(tags)
                changed.append("tags")
            if notes is not None:
                item["notes"] = notes
                changed.append("notes")
            data["history"].append({"time": _now(), "event": "updated", "id": item["id"], "detail": ",".join(changed)})
        return dict(item)

    def remove(self, prompt_id: str) -> dict:
        """Remove a prompt; returns what was removed."""
        with self._edit() as data:
            item = self._find(data, prompt_id)
            data["prompts"].remove(item)
            data["history"].append({"time": _now(), "event": "removed", "id": item["id"], "detail": item["text"]})
        return item

    def mark_used(self, prompt_ids: Iterable[str], bank: str) -> None:
        """Record that ``bank`` used these prompts (each bank listed once per prompt)."""
        ids = list(dict.fromkeys(str(i) for i in prompt_ids))
        with self._edit() as data:
            for prompt_id in ids:
                item = self._find(data, prompt_id)
                if bank not in item["used_by"]:
                    item["used_by"].append(bank)
                    data["history"].append({"time": _now(), "event": "used", "id": item["id"], "detail": bank})

    def add_table1(self) -> list[dict]:
        """Add the paper's Table 1 prompts that the library lacks (compared case/space-insensitively).

        A Table 1 prompt already present keeps its id and gains the ``paper``/``table1`` tags; other prompts
        (e.g. the paraphrases older rcmae versions seeded) are left alone. Returns the prompts added.
        """
        added = []
        with self._edit() as data:
            known = {normalize(p["text"]): p for p in data["prompts"]}
            numbers = [int(m.group(1)) for p in data["prompts"] if (m := re.fullmatch(r"p(\d+)", p["id"]))]
            numbers += [int(m.group(1)) for e in data["history"] if (m := re.fullmatch(r"p(\d+)", str(e.get("id"))))]
            next_id = max(numbers, default=0) + 1
            for text in TABLE1_PROMPTS:
                item = known.get(normalize(text))
                if item is not None:
                    item["tags"] = list(dict.fromkeys([*item["tags"], *TABLE1_TAGS]))
                    continue
                item = {"id": f"p{next_id}", "text": text, "tags": list(TABLE1_TAGS), "notes": TABLE1_NOTE,
                        "created": _now(), "used_by": []}
                next_id += 1
                data["prompts"].append(item)
                data["history"].append({"time": item["created"], "event": "added", "id": item["id"],
                                        "detail": "paper Table 1"})
                added.append(dict(item))
        return added


# ---------------------------------------------------------------- generation
def load_vocabulary(path: str | os.PathLike | None = None) -> dict:
    """The template generator's vocabulary (``assets/prompt_vocabulary.yaml`` by default)."""
    path = Path(path) if path else VOCABULARY
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prompt vocabulary missing; reinstall rcmae or pass a vocabulary file")
    vocab = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in ("templates", "qualities", "facilities", "extras", "sources"):
        if not vocab or not vocab.get(key):
            raise PromptLibraryError(f"{path}: missing '{key}'; see assets/prompt_vocabulary.yaml for the layout")
    return vocab


def template_prompts(n: int, seed: int | None = None, existing: Iterable[str] = (),
                     vocabulary: dict | None = None) -> list[str]:
    """``n`` distinct prompts from the template generator; the same seed gives the same prompts.

    Raises:
        PromptGenerationError: when the vocabulary cannot supply ``n`` new distinct prompts.
    """
    vocab = vocabulary or load_vocabulary()
    rng = np.random.default_rng(seed)
    sources = sorted(vocab["sources"])
    seen = {normalize(t) for t in existing}
    out: list[str] = []
    for _ in range(200 * max(n, 1)):
        if len(out) >= n:
            break
        first, second = rng.choice(sources, size=2, replace=False)
        template = str(rng.choice(vocab["templates"]))
        fill = {
            "quality": rng.choice(vocab["qualities"]),
            "noise": rng.choice(vocab["sources"][first]["noises"]),
            "machines": rng.choice(vocab["sources"][first]["machines"]),
            "noise2": rng.choice(vocab["sources"][second]["noises"]),
            "machines2": rng.choice(vocab["sources"][second]["machines"]),
            "facility": rng.choice(vocab["facilities"]),
            "extra": rng.choice(vocab["extras"]),
        }
        if fill["quality"] in str(fill["noise"]).split():
            continue  # "sharp sharp metallic grinding"
        text = template.format(**{k: str(v) for k, v in fill.items()})
        text = text[0].upper() + text[1:]
        if normalize(text) not in seen and MIN_LEN <= len(text) <= MAX_LEN:
            seen.add(normalize(text))
            out.append(text)
    if len(out) < n:
        raise PromptGenerationError(f"template generator: only {len(out)} new distinct prompts for n={n}; "
                                    f"ask for fewer or extend the vocabulary")
    return out


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


# ---------------------------------------------------------------- command line
def main(args: argparse.Namespace) -> int:
    """``rcmae prompts list|add|add-paper|remove|generate`` (see ``rcmae.cli``)."""
    from rcmae.workspace import Workspace

    library = PromptLibrary(Path(args.library) if args.library else Workspace.default().prompts)
    if args.action == "list":
        for p in library.list():
            used = f" used by {', '.join(p['used_by'])}" if p["used_by"] else ""
            tags = f" [{', '.join(p['tags'])}]" if p["tags"] else ""
            print(f"{p['id']:>5}  {p['text']}{tags}{used}")
        return 0
    if args.action == "add":
        item = library.add(args.text, tags=args.tag, notes=args.note)
        print(f"added {item['id']}: {item['text']}")
        return 0
    if args.action == "add-paper":
        added = library.add_table1()
        for item in added:
            print(f"added {item['id']}: {item['text']}")
        there = len(TABLE1_PROMPTS) - len(added)
        print(f"{library.path}: {len(added)} Table 1 prompt(s) added, {there} already there")
        return 0
    if args.action == "remove":
        item = library.remove(args.id)
        print(f"removed {item['id']}: {item['text']}")
        return 0
    if args.action == "generate":
        prompts, source = generate_prompts(
            args.n, model=args.model, base_url=args.base_url, seed=args.seed,
            use_llm=False if args.template else None, timeout=getattr(args, "timeout", 30.0), existing=library.texts(),
        )
        print(f"prompts from: {source}")
        if len(prompts) < args.n:
            print(f"asked for {args.n}, got {len(prompts)} valid new prompts")
        for text in prompts:
            if args.dry_run:
                print(f"  {text}")
            else:
                item = library.add(text, tags=["generated", "template" if source == "template" else "llm"],
                                   notes=f"generated by {source}")
                print(f"added {item['id']}: {text}")
        return 0
    raise PromptLibraryError(f"unknown prompts action {args.action!r}; use list, add, add-paper, remove or generate")

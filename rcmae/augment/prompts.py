"""The prompt library: the paper's Table 1 prompts and the user's own, in prompts.yaml."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import yaml

from rcmae.files import atomic_write_text

logger = logging.getLogger(__name__)

MIN_LEN, MAX_LEN = 20, 300
VOCABULARY = Path(__file__).resolve().parents[2] / "assets" / "prompt_vocabulary.yaml"

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


class PromptLibraryError(ValueError):
    """A prompt library file or request that cannot be used; the message names the file or field and the fix."""


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


class PromptGenerationError(ValueError):
    """The LLM could not be reached, timed out, or answered something that is not a JSON list of prompts."""

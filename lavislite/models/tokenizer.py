"""BLIP's tokenizer: uncased BERT WordPiece plus bos ``[DEC]`` and the additional special token ``[ENC]``.

For ``bert-base-uncased`` the added ids are 30522 ([DEC]) and 30523 ([ENC]); in general they are
``len(vocab)`` and ``len(vocab) + 1``. Sources: a hub name (local cache first, then the hub; offline fails
fast with a message saying where to put the files), a directory holding ``vocab.txt``, or a ``vocab.txt``.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import urlparse

from lavislite.common.errors import ConfigError
from lavislite.common.registry import registry

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4 in a vocab built here
_TOKENIZER_FILES = ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.json")
_CACHE: dict[tuple[str, str | None], Any] = {}
_LOCK = threading.Lock()


@registry.register_tokenizer("bert_wordpiece")
def init_tokenizer(name_or_path: str | os.PathLike = "bert-base-uncased", cache_dir: str | os.PathLike | None = None):
    """The BLIP tokenizer (memoised per source): BERT uncased + ``[DEC]`` (bos) + ``[ENC]``.

    Sets ``enc_token_id`` and ``dec_token_id`` (= ``bos_token_id``) on the returned tokenizer.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():  # a vocab.txt and its directory are the same source
        path = path.parent
    key = (str(path.resolve()) if path.exists() else str(name_or_path), str(cache_dir) if cache_dir is not None else None)
    with _LOCK:
        tok = _CACHE.get(key)
        if tok is None:
            tok = _build(_resolve_vocab_dir(str(name_or_path), cache_dir))
            _CACHE[key] = tok
    return tok


def _build(folder: Path):
    from transformers import BertTokenizer

    # transformers 5 silently builds an empty tokenizer when files are missing, so check first
    vocab = folder / "vocab.txt"
    if not vocab.is_file():
        raise ConfigError(f"tokenizer directory {folder} has no vocab.txt; put the BERT vocab.txt there")
    tok = BertTokenizer.from_pretrained(str(folder), do_lower_case=True)
    with vocab.open(encoding="utf-8") as fh:
        n_vocab = sum(1 for line in fh if line.rstrip("\n"))
    if len(tok) < n_vocab or tok.unk_token_id is None or tok.pad_token_id is None:
        raise ConfigError(f"{vocab} did not load as a BERT vocabulary ({len(tok)} tokens for {n_vocab} lines); check the file")
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    tok.enc_token_id = tok.convert_tokens_to_ids("[ENC]")
    tok.dec_token_id = tok.bos_token_id
    return tok


def _resolve_vocab_dir(name: str, cache_dir: str | os.PathLike | None) -> Path:
    """A local directory with vocab.txt for ``name`` (a path, or a hub id fetched/cached)."""
    path = Path(name).expanduser()
    if path.is_file():
        if path.name != "vocab.txt":
            raise ConfigError(f"tokenizer file {path} is not a vocab.txt; pass a vocab.txt or the directory holding it")
        return path.parent
    if path.is_dir():
        if not (path / "vocab.txt").is_file():
            raise ConfigError(
                f"tokenizer directory {path} has no vocab.txt; put the BERT vocab.txt there or set model.tokenizer to another directory"
            )
        return path
    if path.is_absolute() or name.startswith((".", "~")) or name.count("/") > 1:
        raise ConfigError(f"tokenizer path {name!r} does not exist; set model.tokenizer to a directory holding vocab.txt")
    return _hub_vocab_dir(name, cache_dir)


def _hub_vocab_dir(repo_id: str, cache_dir: str | os.PathLike | None) -> Path:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    from lavislite.common.download import is_offline

    cache = str(cache_dir) if cache_dir is not None else None
    cached = try_to_load_from_cache(repo_id, "vocab.txt", cache_dir=cache)
    if isinstance(cached, str) and Path(cached).is_file():
        return Path(cached).parent
    where = _where_to_put(repo_id, cache)
    if is_offline():
        raise ConfigError(f"tokenizer {repo_id!r} is not in the local cache and offline mode is on (HF_HUB_OFFLINE/LAVISLITE_OFFLINE). {where}")
    if not _hub_reachable():
        raise ConfigError(f"tokenizer {repo_id!r} is not in the local cache and the Hugging Face hub cannot be reached. {where}")
    try:
        vocab = hf_hub_download(repo_id, "vocab.txt", cache_dir=cache)
        for extra in ("tokenizer_config.json", "special_tokens_map.json"):
            try:
                hf_hub_download(repo_id, extra, cache_dir=cache)
            except Exception:  # optional files; vocab.txt is what matters
                pass
    except Exception as e:  # huggingface_hub raises many types (HTTP, not found, network)
        raise ConfigError(f"could not download the tokenizer {repo_id!r} ({type(e).__name__}: {e}). {where}") from e
    return Path(vocab).parent


def _where_to_put(repo_id: str, cache: str | None) -> str:
    from huggingface_hub import constants

    hub_cache = cache or constants.HF_HUB_CACHE
    return (
        f"Put the tokenizer files ({', '.join(_TOKENIZER_FILES[:2])}; only vocab.txt is required) in a directory and set "
        f"model.tokenizer=<that directory> (or call init_tokenizer('<dir>')), or place the hub snapshot in the cache at "
        f"{Path(hub_cache) / ('models--' + repo_id.replace('/', '--'))} (e.g. `huggingface-cli download {repo_id} vocab.txt` "
        "on a machine with internet)."
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the hub endpoint: huggingface_hub would otherwise retry for minutes."""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def build_wordpiece_vocab(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike) -> Path:
    """Train an uncased BERT WordPiece vocabulary on ``texts``; write and return ``out_dir/vocab.txt``.

    Special tokens get ids 0..4: [PAD], [UNK], [CLS], [SEP], [MASK]. The result loads with ``init_tokenizer(out_dir)``.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    from lavislite.common.utils import atomic_write

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, continuing_subword_prefix="##", show_progress=False)
    tok.train_from_iterator(list(texts), trainer=trainer)
    vocab = tok.get_vocab()
    ordered = sorted(vocab, key=vocab.__getitem__)
    if ordered[: len(SPECIAL_TOKENS)] != SPECIAL_TOKENS:
        raise RuntimeError(f"WordPiece training put the special tokens at unexpected ids: {ordered[:5]}")
    path = out / "vocab.txt"
    with atomic_write(path) as tmp:
        tmp.write_text("\n".join(ordered) + "\n", encoding="utf-8")
    with _LOCK:  # a rebuilt vocab must not be served from the memo
        for key in [k for k in _CACHE if k[0] == str(out.resolve())]:
            del _CACHE[key]
    return path

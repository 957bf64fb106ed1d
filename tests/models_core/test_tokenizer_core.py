"""BLIP tokenizer from a locally built WordPiece vocab; offline errors fail fast and say where files go."""

import time

import pytest

from lavislite.common.errors import ConfigError
from lavislite.models.tokenizer import build_wordpiece_vocab, init_tokenizer

TEXTS = [
    "a picture of a dog sitting on the beach",
    "two dogs are playing with a red ball",
    "a woman riding a horse next to the water",
    "How many dogs are in this image?",
] * 10


@pytest.fixture(scope="module")
def vocab_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("wordpiece")
    path = build_wordpiece_vocab(TEXTS, 80, out)
    assert path == out / "vocab.txt"
    return out


def test_vocab_layout(vocab_dir):
    lines = (vocab_dir / "vocab.txt").read_text().splitlines()
    assert lines[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert len(lines) == len(set(lines)) and 5 < len(lines) <= 80
    assert all(line == line.lower() for line in lines[5:])


def test_special_token_ids(vocab_dir):
    tok = init_tokenizer(vocab_dir)
    n = len((vocab_dir / "vocab.txt").read_text().splitlines())
    assert tok.bos_token == "[DEC]" and tok.dec_token_id == tok.bos_token_id == n
    assert tok.enc_token_id == n + 1 and tok.convert_tokens_to_ids("[ENC]") == n + 1
    assert len(tok) == n + 2
    assert (tok.pad_token_id, tok.unk_token_id, tok.cls_token_id, tok.sep_token_id) == (0, 1, 2, 3)
    enc = tok(["A Picture of a DOG", "dogs"], padding="longest")
    assert enc.input_ids[0][0] == 2 and enc.input_ids[0][-1] == 3 and enc.input_ids[1][-1] == 0
    assert tok.decode(enc.input_ids[0], skip_special_tokens=True) == "a picture of a dog"
    # [DEC]/[ENC] are never split and are dropped by skip_special_tokens
    assert tok.tokenize("[ENC] a dog [DEC]") == ["[ENC]", "a", "dog", "[DEC]"]
    assert tok.decode([n, n + 1, *enc.input_ids[1]], skip_special_tokens=True) == "dogs"


def test_memoised_and_vocab_file_accepted(vocab_dir):
    tok = init_tokenizer(vocab_dir)
    assert init_tokenizer(str(vocab_dir)) is tok
    assert init_tokenizer(vocab_dir / "vocab.txt") is tok


def test_local_errors(tmp_path):
    with pytest.raises(ConfigError, match="vocab.txt"):
        init_tokenizer(tmp_path)  # directory without vocab.txt
    with pytest.raises(ConfigError, match="does not exist"):
        init_tokenizer(tmp_path / "missing" / "dir" / "x")


def test_offline_hub_name_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(ConfigError) as info:
        init_tokenizer("no-such-org/no-such-tokenizer", cache_dir=tmp_path)
    assert time.monotonic() - start < 10
    msg = str(info.value)
    assert "offline" in msg and "vocab.txt" in msg and "model.tokenizer=" in msg
    assert str(tmp_path / "models--no-such-org--no-such-tokenizer") in msg


def test_hub_name_found_in_cache(vocab_dir, tmp_path, monkeypatch):
    # lay out a hub cache snapshot by hand; offline lookups must find it
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    repo = tmp_path / "models--local--tok"
    snap = repo / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    snap.mkdir(parents=True)
    (snap / "vocab.txt").write_text((vocab_dir / "vocab.txt").read_text())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef0123456789abcdef01234567")
    tok = init_tokenizer("local/tok", cache_dir=tmp_path)
    assert tok.enc_token_id == len(tok) - 1

import pytest

from lavislite.common.errors import ConfigError, DataError
from lavislite.common.registry import registry
from lavislite.processors import load_processor
from lavislite.processors.text_processors import pre_caption, pre_question


def test_pre_caption_blip_cleaning():
    assert pre_caption("A  Dog (running)\n") == "a dog running"
    assert pre_caption('A man "riding" a horse!! On the beach.') == "a man riding a horse on the beach"
    assert pre_caption("#Sunset: a*b~c;d") == "sunset a b c d"
    assert pre_caption("  Commas, hyphens-and ? stay  ") == "commas, hyphens-and ? stay"
    # a single tab is not a run of whitespace, and BLIP splits words on " " only: kept, one word
    assert pre_caption("a\tb c d", max_words=2) == "a\tb c"


def test_pre_caption_truncates_words():
    text = " ".join(f"w{i}" for i in range(60))
    assert pre_caption(text).split(" ") == [f"w{i}" for i in range(50)]
    assert pre_caption("one two three four", max_words=3) == "one two three"


def test_pre_question_deletes_and_keeps_blip_quirks():
    assert pre_question("What is this?!  ") == "what is this?"
    assert pre_question("Is it (red)...: yes") == "is it red yes"
    assert pre_question("a  b c", 2) == "a "  # double spaces are not collapsed; the empty word counts
    assert pre_question("one two three", 2) == "one two"


def test_caption_processor_prompt_and_config():
    proc = load_processor("blip_caption", {"name": "blip_caption", "prompt": "a picture of ", "max_words": 3})
    assert proc("A DOG. On grass, today") == "a picture of a dog on"
    assert registry.get_processor_class("blip_caption")()("Hi!") == "hi"
    with pytest.raises(ConfigError, match="max_word"):
        load_processor("blip_caption", {"max_word": 3})


def test_question_processor():
    proc = load_processor("blip_question", {"max_words": 4})
    assert proc("How many DOGS are there in the picture?") == "how many dogs are"


@pytest.mark.parametrize("name", ["blip_caption", "blip_question"])
@pytest.mark.parametrize("bad", [None, 12, ["a dog"], b"a dog"])
def test_non_string_is_a_data_error(name, bad):
    with pytest.raises(DataError, match=repr(bad)[:10].replace("[", r"\[")):
        load_processor(name)(bad)


@pytest.mark.parametrize("name", ["blip_caption", "blip_question"])
def test_empty_after_cleaning_is_a_data_error(name):
    with pytest.raises(DataError, match="empty after cleaning"):
        load_processor(name)("...!!  ")


def test_spacy_counts_words_around_punctuation():
    ws = load_processor("blip_caption", {"max_words": 2})
    sp = load_processor("blip_caption", {"max_words": 2, "word_tokenizer": "spacy"})
    assert ws("red,green,blue,cat sat") == "red,green,blue,cat sat"  # BLIP: 2 "words"
    assert sp("red,green,blue,cat sat") == "red,green"
    assert ws("Hello , world again") == "hello ,"  # BLIP counts the comma as a word
    assert sp("Hello , world again") == "hello , world"
    assert sp("A DOG. Runs") == "a dog"  # cleaning is unchanged
    q = load_processor("blip_question", {"max_words": 3, "word_tokenizer": "spacy"})
    assert q("Is the cat's tail long?") == "is the cat"
    assert q("Why?") == "why?"


def test_spacy_options_checked():
    with pytest.raises(ConfigError, match="word_tokenizer"):
        load_processor("blip_caption", {"word_tokenizer": "nltk"})
    proc = load_processor("blip_caption", {"word_tokenizer": "spacy", "spacy_model": "no_such_pipeline_xx"})
    with pytest.raises(ConfigError, match="no_such_pipeline_xx"):
        proc("a dog")

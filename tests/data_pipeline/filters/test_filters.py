"""Each filter rule against hand-made documents just inside and just outside its threshold.
Each rule is tested alone: every other rule of its filter is switched off (null)."""

from __future__ import annotations

import dataclasses

import pytest

from data_pipeline.command import compose_config
from data_pipeline.curate.config import CurateConfig
from data_pipeline.document import Document
from data_pipeline.filters.c4 import C4Config, C4Filter
from data_pipeline.filters.gopher_quality import GopherQualityConfig, GopherQualityFilter
from data_pipeline.filters.gopher_repetition import GopherRepetitionConfig, GopherRepetitionFilter
from data_pipeline.filters.language import LanguageConfig, LanguageFilter
from data_pipeline.filters.normalize import NormalizeConfig, Normalizer


def doc(text: str) -> Document:
    return Document("test", text, {}, "test.jsonl", 1)


def only(config_class, **rules):
    """A config with every optional threshold off except ``rules``."""
    off = {f.name: None for f in dataclasses.fields(config_class) if f.type.startswith("Optional")}
    return config_class(**{**off, **rules})


def words(count: int, word: str = "word") -> str:
    return " ".join([word] * count)


# ---------------------------------------------------------------- normalization


def test_normalize_default_changes_encoding_only_and_keeps_whitespace():
    text = "Cafe\u0301  au\tlait \x07\r\n\n\n\nline two\u200b  \n"
    document = doc(text)
    normalizer = Normalizer(NormalizeConfig())
    assert normalizer(document) is None
    # NFC, one line ending, no controls or zero-width marks; every space, tab and blank line stays
    assert document.text == "Caf\u00e9  au\tlait \n\n\n\nline two  \n"
    assert normalizer.stats()["changed"] == {"unicode_NFC": 1, "line_endings": 1, "control_chars": 1}


def test_normalize_keeps_code_byte_for_byte():
    code = "def f(x):\n    if x:\n\treturn  x\n\n\n# done\n"
    assert Normalizer(NormalizeConfig()).normalize(code) == code


def test_normalize_whitespace_options():
    tidy = Normalizer(NormalizeConfig(collapse_spaces=True, strip_lines=True, max_blank_lines=1))
    text = "Cafe\u0301  au\tlait \x07\r\n\n\n\nline two\u200b  \n"
    assert tidy.normalize(text) == "Caf\u00e9 au lait\n\nline two"
    assert set(tidy.changed) == {
        "unicode_NFC",
        "line_endings",
        "control_chars",
        "spaces_collapsed",
        "lines_stripped",
        "blank_lines",
    }


def test_normalize_switches_and_empty_document():
    raw = "a  b\u0301"
    untouched = Normalizer(NormalizeConfig(unicode_form=None))
    assert untouched.normalize(raw) == raw
    assert Normalizer(NormalizeConfig())(doc(" \x00 \n\t")) == "empty"


# ---------------------------------------------------------------- language


def test_language_keeps_configured_language_above_score(prose):
    language = LanguageFilter(LanguageConfig(languages=["en"], min_score=0.5))
    english = doc(prose(0))
    assert language(english) is None
    assert english.meta["language"] == "en" and english.meta["language_score"] >= 0.5
    french = doc("Le chat dort sur le canapé pendant que les enfants jouent dans le jardin avec leurs amis.")
    assert language(french) == "other_language"


def test_language_score_threshold_and_any_language(prose):
    text = prose(0)
    assert LanguageFilter(LanguageConfig(languages=["en"], min_score=1.0))(doc(text)) == "low_score"
    assert (
        LanguageFilter(LanguageConfig(languages=None, min_score=0.5))(
            doc("Der Hund schläft im Garten und die Kinder spielen.")
        )
        is None
    )


def test_language_missing_model_path_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model_path"):
        LanguageFilter(LanguageConfig(model_path=str(tmp_path / "missing.ftz")))


# ---------------------------------------------------------------- Gopher quality


@pytest.mark.parametrize(
    "rules, kept, removed, reason",
    [
        ({"min_words": 50}, words(50), words(49), "too_few_words"),
        ({"max_words": 100}, words(100), words(101), "too_many_words"),
        ({"min_mean_word_length": 3}, words(10, "abc"), words(10, "ab"), "short_mean_word_length"),
        ({"max_mean_word_length": 10}, words(10, "a" * 10), words(10, "a" * 11), "long_mean_word_length"),
        # 10 tokens: "#" per token 0.1 is kept, 0.2 is not
        ({"max_symbol_word_ratio": 0.1}, words(9) + " #", words(8) + " # #", "hash_symbol_ratio"),
        ({"max_symbol_word_ratio": 0.1}, words(9) + " …", words(8) + " … …", "ellipsis_ratio"),
        ({"max_bullet_lines_ratio": 0.9}, "- a\n" * 9 + "b", "- a\n" * 10 + "b", "bullet_lines"),
        ({"max_ellipsis_lines_ratio": 0.3}, "a…\n" * 3 + "b\n" * 7, "a…\n" * 4 + "b\n" * 6, "ellipsis_lines"),
        ({"min_alpha_words_ratio": 0.8}, words(8) + " 1 2", words(7) + " 1 2 3", "few_alphabetic_words"),
        ({"min_stop_words": 2}, "The cat and dog", "the cat sat", "few_stop_words"),
    ],
)
def test_gopher_quality_rule(rules, kept, removed, reason):
    quality = GopherQualityFilter(only(GopherQualityConfig, **rules))
    assert quality(doc(kept)) is None
    assert quality(doc(removed)) == reason
    assert quality.removed == {reason: 1} and quality.seen == 2


def test_gopher_quality_alpha_ratio_can_count_punctuation_like_datatrove():
    # 12 of 13 words hold a letter, but only 12 of 19 tokens
    text = "See file.c, line 3 (main); it fails: a b c d e"
    per_word = GopherQualityFilter(only(GopherQualityConfig, min_alpha_words_ratio=0.8))
    per_token = GopherQualityFilter(
        only(GopherQualityConfig, min_alpha_words_ratio=0.8, alpha_ratio_counts_punctuation=True)
    )
    assert per_word(doc(text)) is None
    assert per_token(doc(text)) == "few_alphabetic_words"


def test_gopher_quality_defaults_keep_prose(prose):
    assert GopherQualityFilter(GopherQualityConfig())(doc(prose(5))) is None


# ---------------------------------------------------------------- Gopher repetition


def repetition(**rules) -> GopherRepetitionFilter:
    no_ngram_rules = {"max_top_ngram_char_frac": {}, "max_dup_ngram_char_frac": {}}
    return GopherRepetitionFilter(only(GopherRepetitionConfig, **{**no_ngram_rules, **rules}))


def distinct_lines(count: int) -> list[str]:
    return [f"line number {index} here" for index in range(count)]


@pytest.mark.parametrize(
    "rules, kept, removed, reason",
    [
        # 10 lines: 3 repeats of an earlier line is 0.3 (kept), 4 is 0.4
        ({"max_dup_line_frac": 0.3}, distinct_lines(6) + ["x"] * 4, distinct_lines(5) + ["x"] * 5, "dup_line_frac"),
        (
            {"max_dup_para_frac": 0.3},
            distinct_lines(6) + ["x"] * 4,
            distinct_lines(5) + ["x"] * 5,
            "dup_paragraph_frac",
        ),
        # the repeated line is ~20% of the characters, or ~30%
        (
            {"max_dup_line_char_frac": 0.2},
            ["a" * 40, "a" * 40, "b" * 119],
            ["a" * 60, "a" * 60, "b" * 119],
            "dup_line_char_frac",
        ),
        (
            {"max_dup_para_char_frac": 0.2},
            ["a" * 40, "a" * 40, "b" * 118],
            ["a" * 60, "a" * 60, "b" * 118],
            "dup_paragraph_char_frac",
        ),
    ],
)
def test_gopher_repetition_lines_and_paragraphs(rules, kept, removed, reason):
    separator = "\n\n" if "para" in reason else "\n"
    rule = repetition(**rules)
    assert rule(doc(separator.join(kept))) is None
    assert rule(doc(separator.join(removed))) == reason


def test_gopher_repetition_top_ngram():
    rule = repetition(max_top_ngram_char_frac={2: 0.2})
    unique = " ".join(f"w{index:03d}" for index in range(40))  # 40 words of 4 characters
    # "ab cd" (4 characters) 4 times: 16 of 223 characters; 20 times: 80 of 319
    assert rule(doc(unique + " ab cd" * 4)) is None
    assert rule(doc(unique + " ab cd" * 20)) == "top_2gram_char_frac"


def test_gopher_repetition_duplicated_ngrams():
    rule = repetition(max_dup_ngram_char_frac={5: 0.15})
    unique = [f"w{index:03d}" for index in range(60)]
    repeated = unique[:5]
    # one repeat of a 5-gram: 20 characters of 324; three copies: 60 of 378
    assert rule(doc(" ".join(unique + repeated))) is None
    assert rule(doc(" ".join(unique + repeated * 3 + ["end"]))) == "dup_5gram_char_frac"


def test_gopher_repetition_defaults_keep_prose(prose):
    assert GopherRepetitionFilter(GopherRepetitionConfig())(doc(prose(7))) is None


# ---------------------------------------------------------------- C4


def c4(**rules) -> C4Filter:
    switches = {
        "drop_lines_without_terminal_punct": False,
        "drop_javascript_lines": False,
        "drop_policy_lines": False,
        "remove_citations": False,
        "drop_lorem_ipsum": False,
        "drop_curly_brace": False,
    }
    return C4Filter(only(C4Config, **{**switches, **rules}))


def test_c4_line_rules_rewrite_the_text():
    cases = [
        ({"drop_lines_without_terminal_punct": True}, "Ends well.", "No ending here", "no_terminal_punctuation"),
        ({"drop_lines_without_terminal_punct": True}, "A question?", "Trailing off...", "no_terminal_punctuation"),
        ({"min_words_per_line": 3}, "three words here", "two words", "too_few_words"),
        ({"max_word_length": 5}, "short words", "longword here", "too_long_word"),
        ({"drop_javascript_lines": True}, "Enable scripts please.", "Please enable JavaScript.", "javascript"),
        ({"drop_policy_lines": True}, "Read the book.", "Read our privacy policy.", "policy"),
    ]
    for rules, kept_line, dropped_line, rule_name in cases:
        line_filter = c4(**rules)
        document = doc(f"{kept_line}\n{dropped_line}")
        assert line_filter(document) is None, rules
        assert document.text == kept_line
        assert line_filter.lines_removed == {rule_name: 1}


def test_c4_citations_removed():
    document = doc("A fact[1] and more[citation needed].")
    assert c4(remove_citations=True)(document) is None
    assert document.text == "A fact and more."


def test_c4_document_rules():
    assert c4(drop_lorem_ipsum=True)(doc("Fine text.\nLorem ipsum dolor sit amet.")) == "lorem_ipsum"
    assert c4(drop_curly_brace=True)(doc("Fine text.\nint main() { return 0; }")) == "curly_brace"
    assert c4(drop_curly_brace=True)(doc("Fine text without braces.")) is None


def test_c4_min_sentences():
    rule = c4(min_sentences=5)
    assert rule(doc("One. Two. Three.\nFour! Five?")) is None
    assert rule(doc("One. Two. Three.\nFour!")) == "too_few_sentences"


def test_c4_defaults_keep_prose(prose):
    document = doc(prose(9))
    assert C4Filter(C4Config())(document) is None


def c4_setting(overrides: list[str]) -> C4Config:
    """filters.c4 as the command line composes it (configs/curate.yaml, configs/filters/c4/)."""
    return compose_config("curate", CurateConfig, ["input=x", "output_dir=y", *overrides]).filters.c4


# (overrides, words per line, sentences per page, does an apostrophe end a line)
PAPER = ([], 5, 3, False)  # Raffel et al. 2020, section 2.2
DATATROVE = (["+filters/c4=datatrove"], 3, 5, True)  # datatrove 0.10.1's C4QualityFilter


@pytest.mark.parametrize(
    "overrides, min_words, min_sentences, apostrophe_ends", [PAPER, DATATROVE], ids=["paper", "datatrove"]
)
def test_c4_settings_at_each_threshold_edge(overrides, min_words, min_sentences, apostrophe_ends):
    config = c4_setting(overrides)
    lines = C4Filter(dataclasses.replace(config, min_sentences=None))

    def kept(line: str) -> bool:
        document = doc(line)
        return lines(document) is None and document.text == line

    assert kept(words(min_words - 1) + " end.") and not kept(words(min_words - 2) + " end.")
    # "[1]" is no word: at the edge only with the marker counted
    assert not kept(words(min_words - 2) + " [1] end.")
    for mark in '.?!"':
        assert kept(words(min_words) + mark), mark
    assert kept(words(min_words) + "'") == apostrophe_ends
    for ending in (",", "...", ":", ""):
        assert not kept(words(min_words) + ending), ending

    page = C4Filter(config)
    sentence = words(min_words - 1) + " end."
    assert page(doc("\n".join([sentence] * min_sentences))) is None
    assert page(doc("\n".join([sentence] * (min_sentences - 1)))) == "too_few_sentences"


def test_c4_keeps_kept_lines_byte_for_byte():
    rule = c4(drop_lines_without_terminal_punct=True, remove_citations=True)
    text = "\n  Menu\n    An indented line.\n\n\tA tabbed line!\n  \nHome\n\n  Cited[1] line.   \nFooter\n\n"
    document = doc(text)
    assert rule(document) is None
    # removed lines go; blank lines between kept lines stay (two where "Home" stood between
    # them); blank lines before the first and after the last kept line go
    assert document.text == "    An indented line.\n\n\tA tabbed line!\n  \n\n  Cited line.   "
    assert rule.lines_removed == {"no_terminal_punctuation": 3}


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_c4_keeps_the_final_line_break_of_a_page_whose_last_line_it_keeps(newline):
    rule = c4(drop_lines_without_terminal_punct=True)
    page = newline.join(["A first line of prose.", "", "  An indented second one.", ""])
    kept = doc(page)
    assert rule(kept) is None and kept.text == page  # every line kept: unchanged, final break included
    footer = doc(page + "Footer" + newline)
    assert rule(footer) is None and footer.text == page.rstrip()  # its last line removed: no break after the kept ones


BAD_PAGE = "This page is fine until the last line.\nThen it says shit, twice: SHIT.\nThe end of it."


def test_c4_bad_words_off_by_default_then_default_list_and_own_list(tmp_path):
    assert C4Filter(C4Config(min_sentences=None))(doc(BAD_PAGE)) is None
    assert C4Filter(C4Config(min_sentences=None, bad_words="default"))(doc(BAD_PAGE)) == "bad_words"
    # a word inside a longer word does not count ("shitake" is no bad word; C4: letters a-z around)
    assert (
        C4Filter(C4Config(min_sentences=None, bad_words="default"))(
            doc(BAD_PAGE.replace("shit,", "shitake,").replace("SHIT", "SOUP"))
        )
        is None
    )
    own = tmp_path / "words.txt"
    own.write_text("# my list\n\nthe last line\n")
    assert (
        C4Filter(C4Config(min_sentences=None, bad_words=str(own)))(
            doc("Good text comes first here.\nIt goes until the last line.")
        )
        == "bad_words"
    )
    assert (
        C4Filter(C4Config(min_sentences=None, bad_words=str(own)))(
            doc("Good text comes first here.\nAnd so it is all fine.")
        )
        is None
    )


def test_c4_bad_words_file_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"filters.c4.bad_words=.*missing.txt: cannot read"):
        C4Filter(C4Config(bad_words=str(tmp_path / "missing.txt")))
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n")
    with pytest.raises(ValueError, match=r"empty.txt holds no word"):
        C4Filter(C4Config(bad_words=str(empty)))

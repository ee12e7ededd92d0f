"""The generated-text measures of bench/text_quality.py (what the benchmark report quotes)."""
import random

from bench import text_quality as tq


def test_words_are_lowercased_letter_runs_with_apostrophes():
    assert tq.words("O ROMEO, Romeo! wherefore art thou\nRomeo's 3rd") == \
        ["o", "romeo", "romeo", "wherefore", "art", "thou", "romeo's", "rd"]


def test_words_in_training_counts_every_generated_word():
    vocabulary = {"the", "king", "is"}
    assert tq.words_in_training(["The king is dead", "the KING"], vocabulary) == 5 / 6
    assert tq.words_in_training(["", "..."], vocabulary) == 0.0


def test_distinct_n_pools_samples_but_not_across_their_boundary():
    # Bigrams: (a b) (b a) (a b) in the first, (b a) in the second: 2 distinct of 4.
    assert tq.distinct_n(["a b a b", "b a"], 2) == 2 / 4
    assert tq.distinct_n(["a b c", "d e f"], 3) == 1.0
    # A looping generator scores low.
    assert tq.distinct_n(["to be " * 50], 2) < 0.03
    assert tq.distinct_n(["one"], 2) == 0.0


def brute_force_longest_copy(sample, source):
    best = ""
    for i in range(len(sample)):
        for j in range(i + 1, len(sample) + 1):
            if sample[i:j] in source and j - i > len(best):
                best = sample[i:j]
    return best


def test_longest_copy_matches_brute_force():
    rng = random.Random(3)
    for _ in range(200):
        source = "".join(rng.choice("abc \n") for _ in range(rng.randint(0, 40)))
        sample = "".join(rng.choice("abcd \n") for _ in range(rng.randint(0, 25)))
        assert len(tq.longest_copy(sample, source)) == \
            len(brute_force_longest_copy(sample, source)), (sample, source)
        assert tq.longest_copy(sample, source) in source


def test_longest_copy_finds_a_memorised_line():
    source = "First Citizen:\nBefore we proceed any further, hear me speak.\n"
    sample = "xyzzy Before we proceed any further, qq"
    # " Before" is not in the source (a newline precedes it there); "further, " is.
    assert tq.longest_copy(sample, source) == "Before we proceed any further, "


def test_score_reports_every_measure():
    train = "the king is dead long live the king"
    scored = tq.score(["the king lives", "long live zzz"], train, set(tq.words(train)))
    assert scored["words_in_training"] == 4 / 6  # "lives" and "zzz" are new
    assert scored["longest_copy"] == "long live "
    assert scored["longest_copy_chars"] == 10
    assert scored["median_longest_copy_chars"] == (9 + 10) / 2  # "the king " and "long live "
    assert 0 < scored["distinct_2"] <= 1 and 0 < scored["distinct_3"] <= 1


def test_measure_samples_a_saved_model(tmp_path):
    from conftest import export_tiny_model
    export_tiny_model(tmp_path / "m")
    text = "abc def\ngha bad\n" * 20
    measured = tq.measure(str(tmp_path / "m"), text, text)
    assert set(measured["temperatures"]) == {"0.5", "0.8", "1.0"}
    for row in measured["temperatures"].values():
        assert 0 <= row["words_in_training"] <= 1
        assert row["longest_copy"] in text
        assert len(row["example"]) > 0
    # Held-out slices of the training text itself are all known words.
    assert measured["held_out_text"]["words_in_training"] == 1.0

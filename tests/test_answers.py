"""The one answer checker: a row per rule, each with why it is there."""

import json
from pathlib import Path

import pytest

from looper.answers import answers_equal, extract_answer, is_correct, parse_gold

SHARED_GSM8K = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k"

# (text, strict, flexible, why)
EXTRACT_TABLE = [
    ("So she has 18 eggs.\n#### 18", "18", "18", "GSM8K's own format"),
    ("#### 1,600", "1600", "1600", "thousands commas are formatting, not decimals"),
    ("#### $1,600.00", "1600", "1600", "currency and trailing zero decimals compare as the number"),
    ("#### 1600.", "1600", "1600", "a sentence-ending period is not a decimal point"),
    ("#### 45 dollars", "45", "45", "units after the number are ignored"),
    ("#### 12%", "12", "12", "a percent sign is formatting (GSM8K golds drop it)"),
    ("#### -3", "-3", "-3", "negative answers exist in GSM8K"),
    ("#### 0.5", "0.5", "0.5", "decimals are kept"),
    ("#### 3/4", "0.75", "0.75", "a plain fraction is a number"),
    ("#### 5 + 3 = 8", "8", "8", "an equation in the answer line: the value after the last '='"),
    ("#### 1 2 3 4 5", None, None, "a line that merely lists numbers is not an answer (anti reward-hacking)"),
    ("first #### 7\nthen #### 9", "9", "9", "the last #### line is the final answer"),
    ("#### seven", None, None, "words are not parsed as numbers: no credit"),
    ("#### \\frac{3}{4}", "0.75", "0.75", "LaTeX fractions, as models write them"),
    ("The answer is \\boxed{42}.", None, "42", "boxed answers count in flexible mode only"),
    ("\\boxed{1{,}600}", None, "1600", "LaTeX thousands separator"),
    ("\\boxed{\\$18}", None, "18", "escaped dollar inside a box"),
    ("\\boxed{\\frac{1}{2}}", None, "0.5", "nested braces in a box are balanced"),
    ("So the answer is 18.", None, "18", "a final 'the answer is' sentence counts in flexible mode"),
    ("The final answer is: $20", None, "20", "'final answer is:' with currency"),
    ("The answer is 18 because 3 + 15 = 18 and 2 more", None, "18", "only the start of the sentence is the answer"),
    ("She has 3 apples, then 5, so 8 in total.", None, None, "no last-number fallback: it credits number lists"),
    ("<think>maybe #### 5</think>\n#### 6", "6", "6", "thoughts are removed before checking"),
    ("<think>the answer is 5, so #### 5", None, None, "an unclosed <think> (cut off) gives no answer"),
    ("so #### 5 wait</think>\nFinal: #### 6", "6", "6", "R1 templates open <think> in the prompt: drop up to </think>"),
    ("", None, None, "empty output"),
    ("#### ", None, None, "an empty #### line"),
    ("\\boxed{9}\n#### 7", "7", "7", "#### wins over \\boxed when both are present"),
    ("#### oops\nThe answer is 9", None, None, "an unparseable #### line is not rescued by weaker rules"),
    # signs, mixed numbers, LaTeX spacing (issue 27)
    ("\\boxed{-\\frac{1}{2}}", None, "-0.5", "the sign before a LaTeX fraction is kept"),
    ("\\boxed{-\\dfrac{3}{4}}", None, "-0.75", "\\dfrac too"),
    ("#### - 1/2", "-0.5", "-0.5", "a sign set apart from its fraction"),
    ("#### - 5", "-5", "-5", "a sign set apart from its number"),
    ("#### −7", "-7", "-7", "the Unicode minus sign"),
    ("#### 3 1/2", "3.5", "3.5", "a mixed number"),
    ("#### -3 1/2", "-3.5", "-3.5", "a negative mixed number: the sign applies to the whole"),
    ("\\boxed{3\\frac{1}{2}}", None, "3.5", "a LaTeX mixed number"),
    ("\\boxed{-3\\frac{1}{2}}", None, "-3.5", "a negative LaTeX mixed number"),
    ("#### 2 3/2", None, None, "not a mixed number (improper fraction): two numbers"),
    ("\\boxed{1\\frac{3}{2}}", None, None, "not a LaTeX mixed number either"),
    ("\\boxed{1,\\!600}", None, "1600", "LaTeX negative thin space after a thousands comma"),
    ("\\boxed{1\\,600}", None, "1600", "LaTeX thin space between digit groups"),
    ("\\boxed{1\\,600\\,000}", None, "1600000", "several digit groups"),
    ("\\boxed{1 600}", None, None, "a plain space between numbers is two numbers, not a digit group"),
    ("\\boxed{1\\,60}", None, None, "a thin space before fewer than three digits is no digit group"),
    ("\\boxed{\\sqrt{4}}", None, None, "a command that computes is not a plain number"),
    ("\\boxed{2\\pi}", None, None, "nor is a symbol"),
    ("\\boxed{1 2 3 4 5}", None, None, "a list of numbers in a box is not an answer"),
    ("\\boxed{45^\\circ}", None, "45", "degrees are formatting"),
    ("\\boxed{\\left(5\\right)}", None, "5", "\\left / \\right are formatting"),
    ("\\boxed{5+3=8}", None, "8", "an equation in a box: the value after the last '='"),
    ("#### 5 - 3", None, None, "an expression is not an answer"),
    # field reports, round 2 (issue 44): forms math-tuned models write after "####" (lm-eval #1204, verl #2150)
    ("#### \\boxed{72}", "72", "72", "a box that is the whole #### span is its number"),
    ("#### $\\boxed{72}$.", "72", "72", "the box in math mode with a full stop"),
    ("#### \\boxed{1} or \\boxed{2}", None, None, "two boxes on the #### line are a hedge, not an answer"),
    ("#### 72 (48 + 24)", "72", "72", "a trailing parenthesis that works the number out is the answer's arithmetic"),
    ("#### 1,600 (1,000 + 600).", "1600", "1600", "its numbers read as everywhere else"),
    ("#### 24 (4 x 6)", "24", "24", "'x' and '×' are times in such a parenthesis"),
    ("#### 72 (48 + 25)", None, None, "a parenthesis whose arithmetic differs from the number is a contradiction"),
    ("#### 12 (13)", None, None, "a second number in brackets is a hedge, not arithmetic for the first"),
    ("#### 12 (or 13)", None, None, "so is 'or' in brackets"),
    ("#### 2 (2 ** 10)", None, None, "only + - * /: a power could make the check itself expensive"),
    # one comparison everywhere (issue 44, Math-Verify #21): the canonical answer is exact, never rounded, so the
    # Regime W consensus (grouped by this string) agrees with eval's exact comparison
    ("#### 72.00000000004", "72.00000000004", "72.00000000004", "an answer is never rounded to a near integer"),
    ("#### 1/3", "1/3", "1/3", "a rational without a finite decimal stays an exact fraction"),
    ("#### 0.1250", "0.125", "0.125", "a finite decimal is written without trailing zeros"),
]


@pytest.mark.parametrize("text,strict,flexible,why", EXTRACT_TABLE, ids=[row[3][:50] for row in EXTRACT_TABLE])
def test_extract_answer(text, strict, flexible, why):
    assert extract_answer(text, "strict") == strict, why
    assert extract_answer(text, "flexible") == flexible, why


# (text, gold, mode, correct, why)
CORRECT_TABLE = [
    ("#### 1,600", "1600", "strict", True, "commas vs none"),
    ("#### 1600.0", "1,600", "strict", True, "decimal zero vs commas in gold"),
    ("#### 1600", 1600, "strict", True, "numeric gold"),
    ("#### 1600", 1600.0, "strict", True, "float gold"),
    ("#### 1601", "1600", "strict", False, "off by one is wrong"),
    ("\\boxed{1600}", "1600", "strict", False, "strict mode ignores boxes"),
    ("\\boxed{1600}", "1600", "flexible", True, "flexible mode reads boxes"),
    ("#### 0.50", "1/2", "strict", True, "0.5 = 1/2 exactly"),
    ("1600 1600 1600", "1600", "flexible", False, "repeating the gold without an answer marker is not credited"),
    ("\\boxed{-\\frac{1}{2}}", "0.5", "flexible", False, "the wrong sign is not credited"),
    ("\\boxed{-\\frac{1}{2}}", "-0.5", "flexible", True, "the right sign is"),
    ("#### 72.00000000004", "72", "strict", False, "near the gold is not the gold"),
    ("#### 0.3333333333", "1/3", "strict", False, "a rounded decimal is not the fraction"),
]

# R1's generation prompt ends inside a thought ("<｜Assistant｜><think>\n"): (completion, gold, correct, why)
THOUGHT_OPEN_TABLE = [
    (
        "Okay, 48 in April, 24 in May, so the answer is 72. Wait, let me re-check the",
        "72",
        False,
        "cut off mid-thought: no answer, whatever numbers the thought holds",
    ),
    ("48 + 24 = 72 #### 72", "72", False, "an answer-shaped line inside an unfinished thought is still thought"),
    ("48 + 24 = 72\n</think>\n\n#### 72", "72", True, "a finished thought, then the answer"),
    ("so maybe \\boxed{70}\n</think>\n\nThe answer is \\boxed{72}", "72", True, "only what follows </think> counts"),
    ("thinking...\n</think>\n\nI am not sure.", "72", False, "a finished thought without an answer"),
]


@pytest.mark.parametrize("text,gold,correct,why", THOUGHT_OPEN_TABLE, ids=[row[3][:50] for row in THOUGHT_OPEN_TABLE])
def test_a_thought_the_prompt_opened_must_close_before_an_answer(text, gold, correct, why):
    for mode in ("strict", "flexible"):
        expected = correct and (mode == "flexible" or "####" in text.rsplit("</think>", 1)[-1])
        assert is_correct(text, gold, mode, thought_open=True) is expected, (mode, why)
    if "</think>" not in text:  # the same text from a prompt that opened no thought is read as before
        assert extract_answer(text, "flexible", thought_open=True) is None


@pytest.mark.parametrize("text,gold,mode,correct,why", CORRECT_TABLE, ids=[row[4] for row in CORRECT_TABLE])
def test_is_correct(text, gold, mode, correct, why):
    assert is_correct(text, gold, mode) is correct, why


def test_adversarial_think_tags_are_linear_time():
    import time

    text = "</think>" + "<think> 1 + 1 = 2 " * 50000 + "#### 3"
    t = time.perf_counter()
    assert extract_answer(text, "flexible") is None  # an unclosed <think> hides the rest
    assert time.perf_counter() - t < 0.5


def test_unknown_mode_is_an_error():
    with pytest.raises(ValueError, match="unknown answer mode"):
        extract_answer("#### 1", "loose")


def test_answers_equal_compares_numbers():
    assert answers_equal("1600", "1600.0")
    assert not answers_equal(None, None)  # two missing answers do not agree
    assert not answers_equal("3", "4")


@pytest.mark.skipif(not SHARED_GSM8K.is_dir(), reason="real GSM8K copy not present")
def test_every_real_gsm8k_gold_parses():
    count = 0
    for split in ("train", "test"):
        for line in (SHARED_GSM8K / f"{split}.jsonl").open():
            row = json.loads(line)
            gold = parse_gold(row["answer"])
            assert gold is not None, row["answer"][-80:]
            assert is_correct(row["answer"], gold)  # the solution itself is correct under strict mode
            count += 1
    assert count == 8792

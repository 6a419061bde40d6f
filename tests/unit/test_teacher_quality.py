"""Quality checks on teacher output (normalise / problem_with) and the template version pins."""

from __future__ import annotations

import dataclasses

import pytest

from training.teacher.prompts import DESCRIPTION, ORACLE, TEMPLATES, UNGUIDED
from training.teacher.quality import MIN_WORDS_AFTER_OPENING, normalise, problem_with
from training.teacher.tasks import KINDS

BODY = "They enjoy tense crime thrillers with morally grey heroes, sharp dialogue and a slow-burning mystery at their core."


def test_clean_answer_passes_unchanged():
    text = f"{ORACLE.opening} {BODY}"
    assert normalise(text, ORACLE) == (text, False)
    assert problem_with(text, "stop", ORACLE) is None


@pytest.mark.parametrize("raw", ["", "   \n\t ", '**Response:** ""', "> "])
def test_empty_answer(raw):
    text, _ = normalise(raw, ORACLE)
    assert text == ""
    assert problem_with(text, "stop", ORACLE) == "empty"


def test_truncated_answer_is_flagged_even_with_the_right_opening():
    text, _ = normalise(f"{ORACLE.opening} {BODY} And furthermore the user", ORACLE)
    assert problem_with(text, "length", ORACLE) == "truncated"
    assert problem_with(text, "stop", ORACLE) is None


@pytest.mark.parametrize(
    "raw",
    [
        f"The user likes thrillers. {BODY}",
        f"Based on the history, {ORACLE.opening.lower()} {BODY}",  # opening not at the start
        f"The user's preferences are as follows. {BODY}",  # the unguided opening is not the oracle's
    ],
)
def test_missing_opening(raw):
    text, rewritten = normalise(raw, ORACLE)
    assert not rewritten
    assert problem_with(text, "stop", ORACLE) == "missing opening"


def test_opening_variant_with_the_title_is_rewritten_to_the_exact_opening():
    raw = f"The user's preferences related to the target item Deceiver (1997) are as follows: {BODY}"
    text, rewritten = normalise(raw, ORACLE)
    assert rewritten
    assert text == f"{ORACLE.opening} {BODY}"
    assert problem_with(text, "stop", ORACLE) is None


def test_opening_variant_broken_over_lines_is_rewritten():
    raw = f"The user's preferences related to the target item\nare as follows:\n\n{BODY}"
    text, rewritten = normalise(raw, ORACLE)
    assert rewritten and text == f"{ORACLE.opening} {BODY}"


def test_unguided_variant_and_markdown_lead_and_smart_quotes():
    raw = f'**Response:** "The user\u2019s preferences, judging from this history, are as follows: {BODY}"'
    text, rewritten = normalise(raw, UNGUIDED)
    assert rewritten
    assert text == f"{UNGUIDED.opening} {BODY}"  # lead, quotes and the unbalanced closing quote gone
    assert problem_with(text, "stop", UNGUIDED) is None


def test_variant_is_not_applied_without_a_template_or_to_far_away_phrases():
    raw = f"The user's preferences related to the target item Deceiver (1997) are as follows: {BODY}"
    assert normalise(raw) == (raw, False)
    far = "The user's preferences related to the target item " + "x " * 100 + "are as follows. " + BODY
    text, rewritten = normalise(far, ORACLE)
    assert not rewritten and problem_with(text, "stop", ORACLE) == "missing opening"


def test_description_has_no_variant_and_checks_its_opening():
    good = "Users who prefer slow, atmospheric mysteries with a twist would find this item suitable for a quiet evening."
    assert problem_with(normalise(good, DESCRIPTION)[0], "stop", DESCRIPTION) is None
    assert (
        problem_with(
            "Viewers who prefer mysteries would find this item suitable for a quiet evening at home.", "stop", DESCRIPTION
        )
        == "missing opening"
    )


@pytest.mark.parametrize("template", [ORACLE, UNGUIDED, DESCRIPTION], ids=lambda t: t.kind)
def test_too_short_counts_the_words_after_the_opening(template):
    # The oracle opening alone has 11 words: "<opening> Thrillers." must not pass as a rationale.
    assert problem_with(normalise(f"{template.opening} Thrillers.", template)[0], "stop", template) == "too short"
    eleven = f"{template.opening} " + " ".join(["word"] * (MIN_WORDS_AFTER_OPENING - 1))
    assert problem_with(eleven, "stop", template) == "too short"
    assert problem_with(eleven + " word", "stop", template) is None


# The version of a template is part of every cache key. Changing its text, opening, limits or
# opening variant without bumping `version` would silently mix answers to two different prompts
# in one cache. Rule: when this test fails because you edited a template, bump that template's
# `version` (e.g. "oracle-v1" -> "oracle-v2") and put the new (version, fingerprint) pair here.
# Never update a fingerprint while keeping the old version.
PINNED = {
    "oracle": ("oracle-v1", "f845087210e8"),
    "unguided": ("unguided-v1", "6fff299caef4"),
    "description": ("description-v2", "e115b19e7c12"),
}


def test_every_template_fingerprint_is_pinned_to_its_version():
    assert set(TEMPLATES) == set(KINDS) == set(PINNED)
    current = {kind: (t.version, t.fingerprint) for kind, t in TEMPLATES.items()}
    assert current == PINNED, "a template changed: bump its version and re-pin (see the comment above PINNED)"


def test_fingerprint_covers_text_opening_limits_and_variant():
    for change in (
        {"text": ORACLE.text + " "},
        {"opening": ORACLE.opening + " "},
        {"max_words": ORACLE.max_words + 1},
        {"max_tokens": ORACLE.max_tokens + 1},
        {"opening_variant": None},
    ):
        assert dataclasses.replace(ORACLE, **change).fingerprint != ORACLE.fingerprint, change

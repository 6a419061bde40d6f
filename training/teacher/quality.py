"""Checks on teacher output: bad output is detected and counted, never silently kept."""

from __future__ import annotations

import re

from training.teacher.prompts import PromptTemplate

_SPACES = re.compile(r"\s+")
_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"'})
MIN_WORDS_AFTER_OPENING = 12
_LEAD = re.compile(r'^(?:\s|\*|"|\'|#|>|response:)+', re.IGNORECASE)


def normalise(text: str, template: PromptTemplate | None = None) -> tuple[str, bool]:
    """One paragraph: straight quotes, single spaces, no leading markdown or 'Response:' label.

    Returns ``(text, rewritten)``; ``rewritten`` is True when a harmless variant of the
    required opening (``template.opening_variant``) was replaced by the exact opening.
    """
    # Whitespace is collapsed before the opening is matched: a line break inside the opening
    # ("... target item\nare as follows:") is still the same harmless variant.
    text = _SPACES.sub(" ", _LEAD.sub("", text.translate(_QUOTES).strip()))
    rewritten = False
    if template is not None and template.opening_variant:
        match = re.match(template.opening_variant, text, flags=re.IGNORECASE)
        if match and not text.startswith(template.opening):
            text = template.opening + " " + text[match.end() :].lstrip()
            rewritten = True
    text = _SPACES.sub(" ", text).strip()
    if text.endswith('"') and text.count('"') % 2 == 1:
        text = text[:-1].rstrip()
    return text, rewritten


def problem_with(text: str, finish_reason: str, template: PromptTemplate) -> str | None:
    """Why an answer is unusable (``empty``, ``truncated``, ``missing opening``), or None."""
    if not text:
        return "empty"
    if finish_reason == "length":
        return "truncated"
    opening = template.opening.translate(_QUOTES).rstrip(".:").lower()
    if not text.lower().startswith(opening):
        return "missing opening"
    # Counted after the opening: the oracle's opening alone is 11 words, so counting the whole
    # text let "<opening> Thrillers." pass as a rationale.
    if len(text.split()) - len(template.opening.split()) < MIN_WORDS_AFTER_OPENING:
        return "too short"
    return None

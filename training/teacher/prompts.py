"""Teacher prompt templates (paper Fig. 8 and Fig. 9), versioned.

The version string is part of every cache key: editing a template's text
without bumping its version would silently mix outputs of two prompts, so
:data:`TEMPLATES` is checked by a test against a fingerprint of its text.

Layout choice: the fixed instructions come first and the per-user data last,
so llama.cpp's prompt cache reuses the shared prefix (prompt processing is
~70% of the teacher's time on a CPU). The content is the paper's.

Length choice: all-MiniLM-L6-v2 reads at most 256 word pieces. A rationale of
at most 100 words is ~130-150 word pieces; the target item's metadata adds
~20-40, so rationale ⊕ metadata fits the window with room to spare
(measured on the committed ML-100K data by ``r2end teach lengths``).
``max_tokens`` (200) is a hard stop well above 100 words so that a complete
answer is never cut; an answer that hits it is flagged as truncated.

Item descriptions are held to 80 words (170 tokens): D_i ⊕ M_i must fit the same
window, and 1,349 descriptions on a 2-core CPU are the largest share of the
teacher's time (description-v1 allowed 100 words and was never generated).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from training.teacher.domain import Domain


@dataclass(frozen=True)
class PromptTemplate:
    """A versioned prompt: ``text`` has ``{placeholders}``; ``opening`` is the required first words."""

    kind: str
    version: str
    text: str
    opening: str
    max_words: int = 100
    max_tokens: int = 200
    opening_variant: str | None = None
    """Regex of harmless variants of the opening (e.g. the model inserts the item's title);
    a match is rewritten to ``opening`` and counted, anything else is a missing opening."""

    def render(self, **values: str) -> str:
        """The user message for one request."""
        return self.text.format(max_words=self.max_words, **values)

    @property
    def fingerprint(self) -> str:
        """Short hash of the template text and limits (tests pin it to the version)."""
        blob = f"{self.text}|{self.opening}|{self.max_words}|{self.max_tokens}|{self.opening_variant}".encode()
        return hashlib.sha256(blob).hexdigest()[:12]


ORACLE = PromptTemplate(
    kind="oracle",
    version="oracle-v1",
    opening="The user's preferences related to the target item are as follows.",
    opening_variant=r"^the user's preferences related to the target item\b[^\n]{0,160}?\bare as follows\s*[.:]",
    text=(
        "Task:\n"
        "Based on the user's chronological {history_noun} history and the target item, analyze and "
        "summarize the user's preferences related to the target item.\n"
        "Focus on identifying the user's preferences related to the target item from the user's "
        "{history_noun} history.\n\n"
        "Requirements:\n"
        '- Start with "The user\'s preferences related to the target item are as follows."\n'
        "- Write a single coherent paragraph (max {max_words} words) summarizing the user's "
        "preferences related to the target item.\n\n"
        "User's {history_title} History:\n{history}\n\n"
        "Target Item:\n{target}\n\n"
        "Response:"
    ),
)

UNGUIDED = PromptTemplate(
    kind="unguided",
    version="unguided-v1",
    opening="The user's preferences are as follows.",
    opening_variant=r"^the user's preferences\b[^\n]{0,160}?\bare as follows\s*[.:]",
    text=(
        "Task:\n"
        "Based on the user's chronological {history_noun} history, analyze and summarize the user's "
        "preferences and the kind of item the user is likely to choose next.\n"
        "Focus on identifying the user's preferences from the user's {history_noun} history.\n\n"
        "Requirements:\n"
        '- Start with "The user\'s preferences are as follows."\n'
        "- Write a single coherent paragraph (max {max_words} words) summarizing the user's "
        "preferences.\n\n"
        "User's {history_title} History:\n{history}\n\n"
        "Response:"
    ),
)

DESCRIPTION = PromptTemplate(
    kind="description",
    version="description-v2",
    opening="Users who prefer",
    max_words=80,
    max_tokens=170,
    text=(
        "Task:\n"
        "Analyze the provided metadata and {evidence_noun} to determine what kinds of users are most "
        'likely to prefer the target item. Your response should start with: "Users who prefer '
        '[common themes/preferences] would find this item suitable." Incorporate patterns from the '
        "{evidence_noun}, such as favored features, usage scenarios, or functional benefits. Avoid "
        "generic statements and ensure your description is grounded in the {evidence_noun}.\n\n"
        "Requirements:\n"
        '- Begin with the sentence: "Users who prefer ..."\n'
        "- Use a single paragraph, no more than {max_words} words.\n"
        "- Focus on inferred user traits, preferences, and realistic use cases.\n\n"
        "Target Item Metadata:\n{metadata}\n\n"
        "{evidence_title}:\n{evidence}\n\n"
        "Response:"
    ),
)

TEMPLATES = {t.kind: t for t in (ORACLE, UNGUIDED, DESCRIPTION)}


def oracle_prompt(domain: Domain, history: str, target: str) -> str:
    """Fig. 8: history plus the true next item (the oracle)."""
    return ORACLE.render(history_noun=domain.history_noun, history_title=domain.history_title, history=history, target=target)


def unguided_prompt(domain: Domain, history: str) -> str:
    """Fig. 8 without the oracle (ablations 1 and 2)."""
    return UNGUIDED.render(history_noun=domain.history_noun, history_title=domain.history_title, history=history)


def description_prompt(domain: Domain, metadata: str, evidence: str, has_reviews: bool) -> str:
    """Fig. 9: item metadata plus reviews, or the one-step-prior items of its users."""
    if has_reviews:
        noun, title = "reviews", "Reviews of Previously Purchased Items"
    else:
        noun, title = f"{domain.item_noun}s these users chose just before it", domain.prior_items_title
    return DESCRIPTION.render(metadata=metadata, evidence=evidence, evidence_noun=noun, evidence_title=title)

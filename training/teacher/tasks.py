"""Build the teacher's requests from a prepared dataset (no LLM here: pure data -> prompts)."""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass

from index.verbalize import Verbaliser, item_text
from training.data.preprocess import PreparedDataset
from training.teacher.domain import domain_for
from training.teacher.prompts import (
    DESCRIPTION,
    ORACLE,
    UNGUIDED,
    PromptTemplate,
    description_prompt,
    oracle_prompt,
    unguided_prompt,
)

KINDS = ("oracle", "description", "unguided")
MAX_EVIDENCE_LINES = 8
MAX_EVIDENCE_REVIEW_CHARS = 160
PROMPT_VERBALISER = Verbaliser()
"""H_u in the teacher's prompts: the paper's rule. Prompts are part of the cache keys, so a change
here makes the committed teacher data stale; a training config may verbalise its student input differently."""


@dataclass(frozen=True)
class TeacherTask:
    """One request: which kind, about whom (``user:<id>`` / ``item:<id>``), and its prompt."""

    kind: str
    subject: str
    prompt: str
    template: PromptTemplate


def user_history_text(ds: PreparedDataset, user: int, stage: str = "train") -> str:
    """H_u of a user at a stage, as the teacher's prompts show it."""
    history, _ = ds.example(user, stage)
    return ds.history_texts([history], PROMPT_VERBALISER)[0]


def oracle_tasks(ds: PreparedDataset) -> list[TeacherTask]:
    """Fig. 8 for every user's training target (the last training interaction)."""
    domain = domain_for(ds.name)
    tasks = []
    for u, user_id in enumerate(ds.users):
        _, target = ds.example(u, "train")
        prompt = oracle_prompt(domain, user_history_text(ds, u), item_text(ds.catalog.at(target)))
        tasks.append(TeacherTask("oracle", f"user:{user_id}", prompt, ORACLE))
    return tasks


def unguided_tasks(ds: PreparedDataset) -> list[TeacherTask]:
    """Fig. 8 without the target, same histories (ablations 1 and 2)."""
    domain = domain_for(ds.name)
    return [
        TeacherTask("unguided", f"user:{user_id}", unguided_prompt(domain, user_history_text(ds, u)), UNGUIDED)
        for u, user_id in enumerate(ds.users)
    ]


def item_metadata_block(ds: PreparedDataset, row: int) -> str:
    """The 'Target Item Metadata' block of Fig. 9."""
    item = ds.catalog.at(row)
    title = item_text(item).split("; ")[0]
    lines = [f"- Title: {title}"]
    if item.categories:
        lines.append("- Categories: " + ", ".join(item.categories))
    if item.brand:
        lines.append(f"- Brand: {item.brand}")
    if item.description:
        lines.append(f"- Original Description: {item.description}")
    return "\n".join(lines)


def prior_item_evidence(ds: PreparedDataset) -> dict[int, tuple[str, bool]]:
    """Per item row: the one-step-prior items of users who chose it (training part only, no leakage).

    With reviews, each line quotes the user's review of that prior item (Fig. 9's
    "Reviews of Previously Purchased Items"); without, it lists the prior items
    by how many of the item's users chose them just before.
    """
    priors: dict[int, Counter[int]] = {}
    review_lines: dict[int, list[str]] = {}
    for u, user_id in enumerate(ds.users):
        seq = ds.train_sequence(u)
        for (prev, _), (cur, _) in itertools.pairwise(seq):
            priors.setdefault(cur, Counter())[prev] += 1
            review = ds.reviews.get((user_id, ds.catalog.at(prev).item_id))
            if review and len(review_lines.setdefault(cur, [])) < MAX_EVIDENCE_LINES:
                short = (
                    review
                    if len(review) <= MAX_EVIDENCE_REVIEW_CHARS
                    else review[:MAX_EVIDENCE_REVIEW_CHARS].rsplit(" ", 1)[0] + " …"
                )
                review_lines[cur].append(f'- {item_text(ds.catalog.at(prev)).split("; ")[0]}: "{short}"')
    evidence = {}
    for row in range(ds.n_items):
        if review_lines.get(row):
            evidence[row] = ("\n".join(review_lines[row]), True)
            continue
        counts = priors.get(row)
        if not counts:
            evidence[row] = ("- (none recorded)", False)
            continue
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_EVIDENCE_LINES]
        lines = [f"- {item_text(ds.catalog.at(prev))} ({n} user{'s' if n > 1 else ''})" for prev, n in top]
        evidence[row] = ("\n".join(lines), False)
    return evidence


def description_tasks(ds: PreparedDataset) -> list[TeacherTask]:
    """Fig. 9 for every item of the catalogue."""
    domain = domain_for(ds.name)
    evidence = prior_item_evidence(ds)
    tasks = []
    for row, item in enumerate(ds.catalog):
        text, has_reviews = evidence[row]
        prompt = description_prompt(domain, item_metadata_block(ds, row), text, has_reviews)
        tasks.append(TeacherTask("description", f"item:{item.item_id}", prompt, DESCRIPTION))
    return tasks


BUILDERS = {"oracle": oracle_tasks, "description": description_tasks, "unguided": unguided_tasks}


def build_tasks(ds: PreparedDataset, kind: str) -> list[TeacherTask]:
    """All requests of one kind for a dataset."""
    if kind not in BUILDERS:
        raise ValueError(f"unknown teacher output kind {kind!r}; known: {list(BUILDERS)}")
    return BUILDERS[kind](ds)

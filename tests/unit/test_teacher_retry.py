"""The runner's one retry per bad answer, and ``--redo-flagged``, against a scripted backend."""

from __future__ import annotations

import asyncio

from training.teacher.backends.base import GenerationRequest, GenerationResult
from training.teacher.cache import TeacherCache
from training.teacher.prompts import DESCRIPTION
from training.teacher.runner import BRIEF_INSTRUCTION, CONTINUE_INSTRUCTION, LOOP_PENALTY, run_tasks, task_key
from training.teacher.tasks import TeacherTask

SHORT = "Users who prefer drama, romance, and comedy would find this item suitable."
MORE = (
    "Its viewers chose gentle period dramas just before it, so it suits quiet evenings "
    "and audiences who like slow love stories with a happy ending."
)


class ScriptedBackend:
    """Answers each request with the next scripted text and records what it was asked."""

    model_id = "scripted"
    concurrency = 1

    def __init__(self, answers: list[str]):
        self.answers = list(answers)
        self.requests: list[GenerationRequest] = []

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        self.requests.append(request)
        return GenerationResult(self.answers.pop(0), "stop")

    async def aclose(self) -> None:
        return None


def task(subject: str = "item:1") -> TeacherTask:
    return TeacherTask("description", subject, f"Describe {subject}.", DESCRIPTION)


def run(backend: ScriptedBackend, cache: TeacherCache, redo_flagged: bool = False):
    return asyncio.run(run_tasks([task()], backend, cache, "tiny", show_progress=False, redo_flagged=redo_flagged))


def test_a_too_short_answer_is_continued_in_a_second_turn(tmp_path):
    cache = TeacherCache(tmp_path / "description.jsonl")
    backend = ScriptedBackend([SHORT, MORE])
    summary = run(backend, cache)
    record = cache.get(task_key(task(), "scripted"))
    assert summary.ok == 1 and record["status"] == "ok"
    assert record["text"] == f"{SHORT} {MORE}"
    assert record["first_attempt_problem"] == "too short" and record["attempts"] == 2
    second = backend.requests[1].messages
    assert [m["role"] for m in second] == ["user", "assistant", "user"]
    assert second[1]["content"] == SHORT
    assert second[2]["content"] == CONTINUE_INSTRUCTION.format(max_words=DESCRIPTION.max_words)


def test_a_continuation_that_is_still_too_short_stays_flagged(tmp_path):
    cache = TeacherCache(tmp_path / "description.jsonl")
    run(ScriptedBackend([SHORT, "Yes."]), cache)
    record = cache.get(task_key(task(), "scripted"))
    assert record["status"] == "flagged" and record["problem"] == "too short"


def test_redo_flagged_replaces_a_flagged_record_and_keeps_ok_ones(tmp_path):
    cache = TeacherCache(tmp_path / "description.jsonl")
    run(ScriptedBackend([SHORT, "Yes."]), cache)
    assert run(ScriptedBackend([]), cache).submitted == 0  # a plain run skips the flagged record
    summary = run(ScriptedBackend([SHORT, MORE]), cache, redo_flagged=True)
    assert summary.submitted == 1 and cache.get(task_key(task(), "scripted"))["status"] == "ok"
    assert run(ScriptedBackend([]), cache, redo_flagged=True).submitted == 0  # ok records are kept


def test_a_truncated_answer_is_asked_again_for_plain_sentences_with_more_room(tmp_path):
    cache = TeacherCache(tmp_path / "description.jsonl")

    class Truncating(ScriptedBackend):
        async def generate(self, request):
            result = await super().generate(request)
            return GenerationResult(result.text, "length" if len(self.requests) == 1 else "stop")

    backend = Truncating([f"{SHORT} 1. Drama. 2. Drama. 3. Drama", f"{SHORT} {MORE}"])
    run(backend, cache)
    assert cache.get(task_key(task(), "scripted"))["status"] == "ok"
    retry = backend.requests[1]
    assert retry.max_tokens > DESCRIPTION.max_tokens
    assert retry.messages[-1]["content"].endswith(BRIEF_INSTRUCTION.format(max_words=DESCRIPTION.max_words))


def test_an_answer_truncated_twice_gets_a_last_try_with_a_frequency_penalty(tmp_path):
    """A loop ("- Comedy - Comedy - ...") survives the plain-sentences retry at temperature 0; a penalty breaks it."""
    loop = f"{SHORT} - Comedy - Comedy - Comedy"

    class LoopsUnlessPenalised(ScriptedBackend):
        async def generate(self, request):
            result = await super().generate(request)
            return GenerationResult(result.text, "stop" if request.frequency_penalty else "length")

    cache = TeacherCache(tmp_path / "description.jsonl")
    backend = LoopsUnlessPenalised([loop, loop, f"{SHORT} {MORE}"])
    summary = run(backend, cache)
    record = cache.get(task_key(task(), "scripted"))
    assert record["status"] == "ok" and record["text"] == f"{SHORT} {MORE}"
    assert record["attempts"] == 3 and record["loop_penalty"] == LOOP_PENALTY and summary.retries == 2
    first, brief, last = backend.requests
    assert first.frequency_penalty == brief.frequency_penalty == 0 and last.frequency_penalty == LOOP_PENALTY > 0
    assert last.messages == brief.messages and last.max_tokens == brief.max_tokens  # only the sampling changes

    class LoopsAnyway(ScriptedBackend):
        async def generate(self, request):
            return GenerationResult((await super().generate(request)).text, "length")

    cache = TeacherCache(tmp_path / "again.jsonl")
    run(LoopsAnyway([loop, loop, loop]), cache)  # still cut at the token limit: flagged
    record = cache.get(task_key(task(), "scripted"))
    assert record["status"] == "flagged" and record["problem"] == "truncated" and record["attempts"] == 3


def test_other_problems_get_one_retry_only(tmp_path):
    cache = TeacherCache(tmp_path / "description.jsonl")
    backend = ScriptedBackend([SHORT, "Yes."])
    run(backend, cache)
    record = cache.get(task_key(task(), "scripted"))
    assert record["attempts"] == 2 and "loop_penalty" not in record and len(backend.requests) == 2


def test_a_continuation_cut_by_the_token_limit_keeps_its_complete_sentences(tmp_path):
    cache = TeacherCache(tmp_path / "description.jsonl")

    class CutSecond(ScriptedBackend):
        async def generate(self, request):
            result = await super().generate(request)
            return GenerationResult(result.text, "stop" if len(self.requests) == 1 else "length")

    run(CutSecond([SHORT, f"{MORE} And then the third sentence was cut"]), cache)
    record = cache.get(task_key(task(), "scripted"))
    assert record["status"] == "ok" and record["text"] == f"{SHORT} {MORE}"


def test_a_cut_continuation_without_a_complete_sentence_stays_too_short(tmp_path):
    cache = TeacherCache(tmp_path / "description.jsonl")

    class CutSecond(ScriptedBackend):
        async def generate(self, request):
            result = await super().generate(request)
            return GenerationResult(result.text, "stop" if len(self.requests) == 1 else "length")

    run(CutSecond([SHORT, "The movies these viewers chose just before it included"]), cache)
    record = cache.get(task_key(task(), "scripted"))
    assert record["status"] == "flagged" and record["problem"] == "too short" and record["text"] == SHORT

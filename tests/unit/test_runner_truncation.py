"""truncation.py's rules on plain lists: what a cut chat keeps, how few renders finding it takes, the
room left for the answer, and a raw prompt's start tokens."""

from __future__ import annotations

import pytest

from modelrunner.runner.truncation import TooLong, fit_chat, fit_prompt, prompt_budget


def render(messages: list[dict]) -> str:
    return "".join(f"<{m['role']}>{m['content']}" for m in messages)


def tokenize(text: str) -> list[int]:
    return list(text.encode())


def chat(turns: int) -> list[dict]:
    return [{"role": role, "content": f"{i:04d}"} for i in range(turns) for role in ("user", "assistant")]


def kept(tokens: list[int]) -> str:
    return bytes(tokens).decode()


def test_the_room_for_the_answer():
    assert prompt_budget(512, 0) == 384  # a quarter of the context
    assert prompt_budget(512, 40) == 472
    assert prompt_budget(512, 10_000) == 256  # at most half of it


def test_a_cut_chat_keeps_the_system_messages_and_the_longest_suffix_from_a_user_turn():
    systems = [{"role": "system", "content": "S"}, {"role": "system", "content": "T"}]
    messages = [systems[0], *chat(20), systems[1], *chat(20)]
    text = kept(fit_chat(messages, render, tokenize, 200))
    assert len(text) <= 200 and text.startswith(render(systems))
    start = next(i for i in range(len(messages)) if render(systems) + render(messages[i:]) == text)
    assert messages[start]["role"] == "user"
    earlier = max(i for i in range(start) if messages[i]["role"] == "user")  # one turn more does not fit
    assert len(render(systems) + render(messages[earlier:])) > 200


def test_a_4096_message_chat_is_rendered_a_bounded_number_of_times():
    renders = []

    def counting(messages: list[dict]) -> str:
        renders.append(len(messages))
        return render(messages)

    fit_chat(chat(2048), counting, tokenize, 1000)
    assert len(renders) <= 13


def test_a_tool_result_is_kept_with_the_call_it_answers():
    call = {"role": "assistant", "content": "", "tool_calls": [{"id": "1"}]}
    messages = [*chat(10), call, {"role": "tool", "content": "r" * 50}, {"role": "tool", "content": "q" * 50}]
    text = kept(fit_chat(messages, render, tokenize, len(render(messages[-3:])) + 5))
    assert text == render(messages[-3:])


def test_too_long_when_the_last_message_alone_does_not_fit():
    with pytest.raises(TooLong) as err:
        fit_chat([*chat(2), {"role": "user", "content": "z" * 300}], render, tokenize, 100)
    assert err.value.tokens == len(render([{"role": "user", "content": "z" * 300}]))


def test_a_raw_prompt_keeps_its_start_tokens_and_its_end():
    assert fit_prompt([1, *range(10, 30)], [1], 5) == [1, 26, 27, 28, 29]
    assert fit_prompt(list(range(10, 30)), [1], 4) == [26, 27, 28, 29]  # no BOS to keep
    with pytest.raises(TooLong):
        fit_prompt([1, 2, 3], [1], 1)


def test_a_raw_prompt_shorter_than_the_budget_is_kept_whole():
    """A tail cut by bytes may hold fewer tokens than the budget: nothing is repeated then."""
    assert fit_prompt([1, 10, 11], [1], 10) == [1, 10, 11]


def test_a_chat_whose_bound_alone_is_past_the_budget_is_not_tokenized():
    seen: list[str] = []

    def counting(text: str) -> list[int]:
        seen.append(text)
        return tokenize(text)

    messages = [{"role": "user", "content": "x" * 5000}, {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "hi"}]
    tokens = fit_chat(messages, render, counting, 100, fewest=len)
    assert kept(tokens) == render(messages[-1:]) and all(len(t) <= 100 for t in seen)
    with pytest.raises(TooLong) as err:
        fit_chat(messages[:1], render, counting, 100, fewest=len)
    assert err.value.at_least and str(err.value).startswith("at least ")

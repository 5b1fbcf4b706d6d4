"""Slot choice for the prompt cache: the slot holding the longest start of the prompt when little of it
is lost, else an empty slot (else the least recently used) sharing that start; the prompt's last token
is always left to prefill."""

from __future__ import annotations

from modelrunner.runner.slots import Slots, common_prefix


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 3, 4]) == 3
    assert common_prefix([1, 2, 9, 4], [1, 2, 3, 4]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([5], [1]) == 0


def test_a_prompt_goes_to_the_slot_holding_its_longest_start():
    slots = Slots(3)
    a, b, c = slots.take([1, 2, 3]), slots.take([7, 8]), slots.take([9])
    assert slots.release(a.slot, [1, 2, 3, 4, 5])
    assert slots.release(b.slot, [1, 2, 6])
    assert slots.release(c.slot, [1])
    got = slots.take([1, 2, 3, 4, 5, 6, 7])  # the next turn of a chat
    assert (got.slot, got.reuse, got.source, got.held) == (a.slot, 5, a.slot, True)


def test_the_same_prompt_again_leaves_its_last_token_to_prefill():
    slots = Slots(1)
    slots.release(slots.take([1, 2, 3]).slot, [1, 2, 3, 40, 41])
    assert slots.take([1, 2, 3]).reuse == 2


def test_a_short_match_shares_its_cells_from_an_empty_slot_and_the_oldest_held_slot_goes_last():
    slots = Slots(3)
    first, second, third = slots.take([1]), slots.take([2]), slots.take([3])
    slots.release(first.slot, [1, 2, 3, 4])
    slots.release(second.slot, [5, 6])
    slots.release(third.slot, None)  # nothing kept: the slot is empty
    got = slots.take([1, 9, 9, 9])  # 1 of the 4 tokens the first holds: the first keeps them all
    assert (got.slot, got.reuse, got.source, got.held) == (third.slot, 1, first.slot, False)
    got = slots.take([8, 8])  # nothing to reuse, no empty slot: the least recently released
    assert (got.slot, got.reuse, got.source, got.held) == (first.slot, 0, None, True)


def test_with_no_empty_slot_a_short_match_cuts_its_own_slot_rather_than_lose_another_whole():
    slots = Slots(2)
    first, second = slots.take([1]), slots.take([2])
    slots.release(first.slot, [5, 6, 7, 8])
    slots.release(second.slot, [1, 2, 3, 4, 5, 6])
    got = slots.take([1, 2, 9])  # 2 of the second's 6 tokens; the first (older) keeps all of its own
    assert (got.slot, got.reuse, got.source, got.held) == (second.slot, 2, second.slot, True)


def test_eviction_takes_the_least_recently_used_held_slot():
    slots = Slots(2)
    a, b = slots.take([1]), slots.take([2])
    slots.release(b.slot, [2, 3])
    slots.release(a.slot, [1, 3])
    assert slots.evict() == b.slot
    assert slots.evict() == a.slot
    assert slots.evict() is None
    assert len(slots) == 2


def test_nothing_is_held_when_the_cache_is_off():
    slots = Slots(1, keep_prompts=False)
    assert not slots.release(slots.take([1, 2]).slot, [1, 2, 3])
    assert slots.take([1, 2]).reuse == 0

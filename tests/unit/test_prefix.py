"""Prompt block hashing and the bounded prefix index."""

from gateway.domain import Message, Role
from gateway.scheduling.prefix import BLOCK_BYTES, REUSE_HORIZON, Holding, PrefixIndex, block_hashes, render

SYSTEM = Message(Role.SYSTEM, "You are a careful assistant. " * 40)


def conversation(*turns: str) -> tuple[Message, ...]:
    messages = [SYSTEM]
    for i, text in enumerate(turns):
        messages.append(Message(Role.USER if i % 2 == 0 else Role.ASSISTANT, text))
    return tuple(messages)


def test_only_whole_blocks_are_hashed():
    assert block_hashes("x" * (BLOCK_BYTES - 1)) == ()
    assert len(block_hashes("x" * (3 * BLOCK_BYTES + 5))) == 3


def test_a_next_turn_starts_with_the_blocks_of_the_last():
    first = block_hashes(render(conversation("What is a turnout?")))
    second = block_hashes(render(conversation("What is a turnout?", "A railway switch. " * 30, "And a frog?")))
    assert second[: len(first)] == first and len(second) > len(first)


def test_a_different_system_prompt_shares_no_block():
    other = (Message(Role.SYSTEM, "You are a terse assistant. " * 40), Message(Role.USER, "hi"))
    assert set(block_hashes(render(other))).isdisjoint(block_hashes(render(conversation("hi"))))


def test_equal_text_under_another_role_hashes_differently():
    assert block_hashes(render((Message(Role.USER, "a" * 600),))) != block_hashes(
        render((Message(Role.SYSTEM, "a" * 600),))
    )


def test_match_counts_the_leading_blocks_held():
    index = PrefixIndex()
    short = block_hashes(render(conversation("hi")))
    longer = block_hashes(render(conversation("hi", "hello " * 100, "more")))
    index.record("a/m", short)
    assert index.match("a/m", longer) == len(short)
    assert index.match("b/m", longer) == 0
    assert index.match("a/other-model", longer) == 0


def test_the_index_is_bounded_and_forgets_the_tail_of_a_prompt_first():
    index = PrefixIndex(blocks_per_endpoint=4)
    hashes = block_hashes("y" * (8 * BLOCK_BYTES))
    index.record("a/m", hashes)
    assert index.size("a/m") == 4
    assert index.match("a/m", hashes) == 4


def test_a_recent_prompt_survives_older_ones():
    index = PrefixIndex(blocks_per_endpoint=6)
    old, new = block_hashes("o" * (4 * BLOCK_BYTES)), block_hashes("n" * (4 * BLOCK_BYTES))
    index.record("a/m", old)
    index.record("a/m", new)
    assert index.match("a/m", new) == 4 and index.match("a/m", old) == 2


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_holding_counts_the_recently_used_blocks_a_prompt_would_push_out():
    clock = Clock()
    index = PrefixIndex(blocks_per_endpoint=64, clock=clock)
    index.record("a/m", block_hashes("o" * (6 * BLOCK_BYTES)))
    clock.now += 10
    index.record("a/m", block_hashes("r" * (4 * BLOCK_BYTES)))
    prompt = block_hashes("n" * (4 * BLOCK_BYTES))
    # The server's cache holds 12 blocks: 10 held + 4 new evict the 2 oldest, used 10 s ago.
    assert index.holding("a/m", prompt, 12) == Holding(cached=0, evicts=2, fill=10 / 12)
    clock.now += REUSE_HORIZON
    # A minute later the 6 older blocks are idle: room, not loss; the 4 recent ones fit.
    assert index.holding("a/m", prompt, 12).evicts == 0
    assert index.holding("a/m", block_hashes("n" * (9 * BLOCK_BYTES)), 12).evicts == 1
    # A prompt larger than the whole cache pushes out at most the 4 recent blocks held, not itself.
    assert index.holding("a/m", block_hashes("n" * (40 * BLOCK_BYTES)), 12).evicts == 4


def test_holding_without_a_known_cache_size_has_no_fill_and_evicts_only_past_the_index_bound():
    index = PrefixIndex(blocks_per_endpoint=8)
    index.record("a/m", block_hashes("o" * (6 * BLOCK_BYTES)))
    held = block_hashes("o" * (6 * BLOCK_BYTES) + "x" * (4 * BLOCK_BYTES))
    assert index.holding("a/m", held) == Holding(cached=6, evicts=2, fill=None)
    assert index.holding("b/m", held) == Holding()

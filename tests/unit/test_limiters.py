"""The pure limiters: the token bucket, a connection's frame budgets and admission."""

from dataclasses import replace

from chatd.admission import Admission
from chatd.config import load_config
from chatd.ratelimit import FrameBudget, TokenBucket

DEFAULTS = load_config(None)


def test_bucket_allows_a_burst_then_the_sustained_rate():
    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(100.4) is False  # 0.8 tokens refilled: not yet one
    assert bucket.take(100.5) is True  # one token after half a second at 2/s
    assert bucket.take(100.5) is False


def test_bucket_never_holds_more_than_the_burst():
    bucket = TokenBucket(rate=10.0, burst=2, now=0.0)
    assert [bucket.take(3600.0) for _ in range(3)] == [True, True, False]


def test_bucket_tolerates_time_going_backwards():
    bucket = TokenBucket(rate=1.0, burst=1, now=10.0)
    assert bucket.take(10.0) is True
    assert bucket.take(5.0) is False


def test_admission_caps_per_address_with_429_and_total_with_503():
    admission = Admission(max_total=3, max_per_ip=2)
    assert admission.admit("10.0.0.1") is None
    assert admission.admit("10.0.0.1") is None
    status, reason = admission.admit("10.0.0.1")
    assert status == 429 and "10.0.0.1" in reason
    assert admission.admit("10.0.0.2") is None
    status, _reason = admission.admit("10.0.0.3")
    assert status == 503


def test_admission_frees_a_place_on_release():
    admission = Admission(max_total=1, max_per_ip=1)
    assert admission.admit("10.0.0.1") is None
    admission.release("10.0.0.1")
    assert admission.admit("10.0.0.2") is None


# -- a connection's frame budgets ----------------------------------------------------------------


def budget(**limits) -> FrameBudget:
    values = {
        "messages_per_second": 2.0,
        "message_burst": 3,
        "cheap_per_second": 4.0,
        "cheap_burst": 5,
        "typing_per_second": 1.0,
        "typing_burst": 2,
        "flood_close_after": 3,
        **limits,
    }
    return FrameBudget(replace(DEFAULTS.limits, **values), now=0.0)


def test_cheap_and_costly_frames_have_budgets_of_their_own():
    frames = budget()
    assert [frames.take("say", 0.0) for _ in range(4)] == [True, True, True, False]
    assert [frames.take("who", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert frames.take("queue", 0.0) is False and frames.take("join", 0.0) is False
    assert frames.take("refresh", 0.25) is True  # 4/s: one cheap frame back in 0.25 s
    assert frames.take("say", 0.25) is False  # 2/s: not yet one costly frame
    assert frames.take("say", 0.5) is True


def test_only_costly_frames_strike_toward_closing():
    frames = budget(flood_close_after=3)
    assert [frames.strike("who") for _ in range(100)] == [False] * 100
    assert [frames.strike("say"), frames.strike(None), frames.strike("join")] == [
        False,
        False,
        True,
    ]


def test_a_frame_within_budget_forgives_the_strikes():
    frames = budget(flood_close_after=2)
    assert frames.strike("say") is False
    frames.forgive()
    assert frames.strike("say") is False
    assert frames.strike("say") is True


def test_rate_of_names_the_budget_a_frame_went_over():
    frames = budget()
    rates = [frames.rate_of(kind) for kind in ("who", "say", "typing", None)]
    assert rates == [4.0, 2.0, 1.0, 7.0]


def test_a_creation_budget_bucket_is_full_again_after_its_refill_time():
    bucket = TokenBucket(rate=1.0, burst=2, now=0.0)
    bucket.take(0.0)
    assert bucket.full(0.5) is False
    assert bucket.full(1.0) is True


def test_refused_cheap_frames_do_not_use_up_the_budget_every_frame_shares():
    frames = budget()  # all frames: 6/s, burst 8
    admitted = 0
    for _ in range(1000):
        assert frames.admit(0.0)
        admitted += frames.take("who", 0.0)
    assert admitted == 5
    assert [frames.take("say", 0.0) for _ in range(3)] == [True] * 3

"""The pure limiters: the token bucket and connection admission."""

from chatd.admission import Admission
from chatd.ratelimit import TokenBucket


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

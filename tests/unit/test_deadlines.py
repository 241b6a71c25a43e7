"""Deadlines of one length on one timer (chatd/deadlines.py), on a task.Clock."""

import pytest
from twisted.internet.task import Clock

from chatd.deadlines import Deadlines


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def overdue():
    return []


@pytest.fixture
def deadlines(clock, overdue):
    return Deadlines(clock, 10.0, overdue.append)


def test_each_item_is_overdue_at_its_own_deadline_and_not_before(deadlines, clock, overdue):
    deadlines.set("a")
    clock.advance(4)
    deadlines.set("b")
    clock.advance(5.99)
    assert overdue == []
    clock.advance(0.01)
    assert overdue == ["a"] and "a" not in deadlines and "b" in deadlines
    clock.advance(3.99)
    assert overdue == ["a"]
    clock.advance(0.01)
    assert overdue == ["a", "b"] and len(deadlines) == 0
    assert clock.getDelayedCalls() == []  # nothing left to wait for


def test_one_timer_serves_them_all(deadlines, clock):
    for number in range(1000):
        deadlines.set(number)
        clock.advance(0.001)
    assert len(clock.getDelayedCalls()) == 1


def test_a_met_deadline_says_what_was_left_and_never_fires(deadlines, clock, overdue):
    deadlines.set("a")
    deadlines.set("b")
    clock.advance(2.5)
    assert deadlines.meet("a") == pytest.approx(7.5)
    assert deadlines.meet("a") == 0.0  # met already
    assert deadlines.meet("never set") == 0.0
    clock.advance(7.5)
    assert overdue == ["b"]


def test_items_set_at_the_same_moment_are_overdue_together(deadlines, clock, overdue):
    for item in "xyz":
        deadlines.set(item)
    clock.advance(10)
    assert overdue == ["x", "y", "z"]


def test_an_item_set_while_others_are_overdue_gets_a_full_deadline(clock, overdue):
    def overdue_and_again(item):
        overdue.append(item)
        if item == "first":
            deadlines.set("second")

    deadlines = Deadlines(clock, 10.0, overdue_and_again)
    deadlines.set("first")
    clock.advance(10)
    assert overdue == ["first"]
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(9.99)
    assert overdue == ["first"]
    clock.advance(0.01)
    assert overdue == ["first", "second"]

"""
Tests for the autoscaler's rule (L{chat.scaling}), driven by a L{Clock}.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from chat.scaling import (
    Action,
    Backoff,
    Decision,
    Observation,
    Policy,
    Reading,
    Rule,
    Unreadable,
)

POLL_SECONDS = 5.0
DELAY_SECONDS = 60.0


def seen(users: int, stats_age: float | None = 3.0) -> Observation:
    return Observation(
        users=users,
        by_server={"one": users},
        replicas=1 if stats_age is not None else 0,
        stats_age=stats_age,
    )


class Scenario:
    """
    A rule polled every L{POLL_SECONDS} on a clock, with a Deployment that
    takes whatever size the rule decides.
    """

    def __init__(self, current: int, policy: Policy | None = None) -> None:
        self.clock = Clock()
        self.rule = Rule(policy or Policy(scale_down_delay=DELAY_SECONDS))
        self.current = current
        self.decisions: list[Decision] = []

    def poll(self, reading: Reading) -> Decision:
        decision = self.rule.decide(self.clock.seconds(), self.current, reading)
        self.decisions.append(decision)
        if decision.changes:
            assert decision.target is not None
            self.current = decision.target
        self.clock.advance(POLL_SECONDS)
        return decision

    def run(self, seconds: float, reading: Callable[[float], Reading]) -> None:
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end:
            self.poll(reading(self.clock.seconds()))

    def changes(self) -> list[tuple[float, int | None]]:
        return [(d.time, d.target) for d in self.decisions if d.changes]


class PolicyTests(SynchronousTestCase):
    def test_thresholds(self) -> None:
        """
        Three people fit one pod, four need two, and 28 or more need the
        maximum of ten.
        """
        policy = Policy()
        wanted = {n: policy.desired(n) for n in (0, 1, 3, 4, 6, 7, 27, 28, 29, 500)}
        self.assertEqual(
            wanted, {0: 1, 1: 1, 3: 1, 4: 2, 6: 2, 7: 3, 27: 9, 28: 10, 29: 10, 500: 10}
        )

    def test_clamping(self) -> None:
        """
        The desired size never leaves the bounds, whatever the count.
        """
        policy = Policy(users_per_pod=5, min_replicas=2, max_replicas=4)
        self.assertEqual(
            [policy.desired(n) for n in (0, 5, 11, 15, 16, 21, 10_000)],
            [2, 2, 3, 3, 4, 4, 4],
        )

    def test_bad_settings(self) -> None:
        """
        Settings that cannot work are refused with a reason.
        """
        for settings, words in [
            ({"users_per_pod": 0}, "users per pod"),
            ({"min_replicas": 0}, "minimum"),
            ({"min_replicas": 4, "max_replicas": 3}, "below the minimum"),
            ({"scale_down_delay": -1.0}, "delay"),
            ({"max_stats_age": 0.0}, "age"),
        ]:
            with self.assertRaises(ValueError) as caught:
                Policy(**settings)  # type: ignore[arg-type]
            self.assertIn(words, str(caught.exception))


class RuleTests(SynchronousTestCase):
    def test_scale_up_at_once(self) -> None:
        """
        More people than the pods hold scale up at the very first poll, to
        the size they need.
        """
        scenario = Scenario(current=1)
        decision = scenario.poll(seen(7))
        self.assertEqual(decision.action, Action.UP)
        self.assertEqual(
            (decision.current, decision.desired, decision.target), (1, 3, 3)
        )
        self.assertEqual(decision.users, 7)
        self.assertIn("7 people online need 3 at 3 per pod", decision.reason)

    def test_scale_up_capped(self) -> None:
        """
        A crowd scales up to the maximum and says that the maximum applied.
        """
        scenario = Scenario(current=2)
        decision = scenario.poll(seen(40))
        self.assertEqual((decision.action, decision.target), (Action.UP, 10))
        self.assertIn("need 10 (at most 10)", decision.reason)

    def test_below_minimum(self) -> None:
        """
        A Deployment below the minimum (scaled to zero by hand) is brought up
        to it at once, even with nobody online.
        """
        scenario = Scenario(current=0)
        decision = scenario.poll(seen(0))
        self.assertEqual((decision.action, decision.target), (Action.UP, 1))
        self.assertIn("0 people online need 1 (at least 1)", decision.reason)

    def test_steady(self) -> None:
        """
        When the size matches the people online the rule holds and says so.
        """
        scenario = Scenario(current=2)
        decision = scenario.poll(seen(5))
        self.assertEqual((decision.action, decision.target), (Action.HOLD, 2))
        self.assertEqual(decision.reason, "5 people online need 2 at 3 per pod")

    def test_scale_down_after_delay(self) -> None:
        """
        After everyone leaves, the size drops to the minimum at the first poll
        a full delay after the last poll that wanted more, not before.
        """
        scenario = Scenario(current=1)
        scenario.run(30, lambda now: seen(7))
        left_at = scenario.clock.seconds()
        scenario.run(120, lambda now: seen(0))
        self.assertEqual(scenario.changes(), [(0.0, 3), (left_at + 55.0, 1)])
        down = [d for d in scenario.decisions if d.action is Action.DOWN][0]
        self.assertEqual(
            down.reason,
            "0 people online need 1 (at least 1) at 3 per pod;"
            " no more than 1 wanted for 60s",
        )
        held = [d for d in scenario.decisions if d.time == left_at][0]
        self.assertEqual(held.action, Action.HOLD)
        self.assertIn("3 wanted within the last 60s", held.reason)

    def test_scale_down_to_window_peak(self) -> None:
        """
        A scale-down goes to the highest size wanted in the window, which may
        be above what the people online need right now.
        """
        scenario = Scenario(current=1)
        scenario.run(5, lambda now: seen(7))
        scenario.run(30, lambda now: seen(4))
        scenario.run(120, lambda now: seen(0))
        self.assertEqual(scenario.changes(), [(0.0, 3), (60.0, 2), (90.0, 1)])

    def test_sawtooth(self) -> None:
        """
        People logging in and out in waves every 20 s for ten minutes scale
        the Deployment up once and never down; once the waves stop it comes
        down in one step, a delay later.
        """
        scenario = Scenario(current=1)

        def wave(now: float) -> Reading:
            return seen(8 if now % 20 < 10 else 1)

        scenario.run(600, wave)
        self.assertEqual(scenario.changes(), [(0.0, 3)])
        self.assertEqual(scenario.current, 3)
        last_high = max(d.time for d in scenario.decisions if d.users == 8)
        scenario.run(120, lambda now: seen(1))
        self.assertEqual(scenario.changes(), [(0.0, 3), (last_high + DELAY_SECONDS, 1)])

    def test_sawtooth_without_window(self) -> None:
        """
        With no delay the same waves make it flap, which is what the window
        is for.
        """
        scenario = Scenario(current=1, policy=Policy(scale_down_delay=0))
        scenario.run(60, lambda now: seen(8 if now % 20 < 10 else 1))
        self.assertEqual(len(scenario.changes()), 6)

    def test_start_up_waits_a_window(self) -> None:
        """
        A scaler that starts with the Deployment larger than needed waits a
        full delay before it shrinks it, since it has not seen what came
        before.
        """
        scenario = Scenario(current=5)
        scenario.run(120, lambda now: seen(0))
        self.assertEqual(scenario.changes(), [(DELAY_SECONDS, 1)])

    def test_gap_waits_a_window(self) -> None:
        """
        After a stretch longer than the delay with no decision at all, the
        rule again waits a full delay before it shrinks.
        """
        scenario = Scenario(current=3)
        scenario.run(20, lambda now: seen(9))
        scenario.clock.advance(300)
        scenario.run(120, lambda now: seen(0))
        restart = 320.0
        self.assertEqual(scenario.changes(), [(restart + DELAY_SECONDS, 1)])


class StaleDataTests(SynchronousTestCase):
    def test_stale_figures_hold(self) -> None:
        """
        Replica figures older than the bound hold the size, however many
        people they show, and the reason gives their age.
        """
        scenario = Scenario(current=2)
        for users in (0, 28):
            decision = scenario.poll(seen(users, stats_age=41.0))
            self.assertEqual(
                (decision.action, decision.target, decision.users, decision.desired),
                (Action.HOLD, 2, None, None),
            )
            self.assertEqual(
                decision.reason,
                "replica figures are 41s old (more than 25s); holding",
            )

    def test_no_figures_hold(self) -> None:
        """
        With no replica publishing figures the size is held.
        """
        decision = Scenario(current=4).poll(seen(0, stats_age=None))
        self.assertEqual((decision.action, decision.target), (Action.HOLD, 4))
        self.assertIn("no replica publishes its figures", decision.reason)

    def test_unreadable_holds(self) -> None:
        """
        When Redis cannot be read the size is held and the reason passed on.
        """
        decision = Scenario(current=3).poll(Unreadable("cannot read Redis: refused"))
        self.assertEqual((decision.action, decision.target), (Action.HOLD, 3))
        self.assertEqual(decision.reason, "cannot read Redis: refused; holding")

    def test_bound_is_a_setting(self) -> None:
        """
        Figures just within the bound are used; just beyond it they are not.
        """
        scenario = Scenario(current=1, policy=Policy(max_stats_age=10))
        self.assertEqual(scenario.poll(seen(9, stats_age=10.5)).action, Action.HOLD)
        self.assertEqual(scenario.poll(seen(9, stats_age=10.0)).action, Action.UP)

    def test_stale_stretch_counts_as_current(self) -> None:
        """
        A stretch without good data counts as wanting the current size, so a
        scale-down needs a full delay of good data after it.
        """
        scenario = Scenario(current=3)
        scenario.run(50, lambda now: seen(9))
        scenario.run(20, lambda now: Unreadable("cannot read Redis: timeout"))
        scenario.run(50, lambda now: seen(0, stats_age=90.0))
        good_from = scenario.clock.seconds()
        scenario.run(120, lambda now: seen(0))
        last_held = good_from - POLL_SECONDS
        self.assertEqual(scenario.changes(), [(last_held + DELAY_SECONDS, 1)])


class BackoffTests(SynchronousTestCase):
    def test_growth_and_cap(self) -> None:
        """
        Waits double from the first and stop growing at the cap.
        """
        backoff = Backoff(first=5, cap=60)
        self.assertEqual([backoff.failed() for _ in range(6)], [5, 10, 20, 40, 60, 60])

    def test_reset(self) -> None:
        """
        A success starts the count again from the first wait.
        """
        backoff = Backoff(first=0.5, cap=8)
        backoff.failed()
        backoff.failed()
        backoff.succeeded()
        self.assertEqual(backoff.failed(), 0.5)

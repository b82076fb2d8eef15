"""
The dashboard page in headless Chromium, against a running system with
people online, a hostile name in presence and an autoscaler decision.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from chat.presence import Presence
from tests.browser import Chromium
from tests.httpclient import Answer, fetch
from tests.system import (
    FIGURES_BOUND_SECONDS,
    System,
    put_presence,
    record_decision,
    scaler_heartbeat,
    until,
)

HOSTILE = "<img src=x onerror=alert(1)>"
HOSTILE_REASON = "<b>3 people</b> call for 2 replicas <script>alert(2)</script>"
SAMPLES_BEFORE_LOADING = 8
# Time between the steps of the story, for the charts to show each.
STEP_SECONDS = 1.5
PAGE_BOUND_SECONDS = 30.0
SCREENSHOT_NAME = "dashboard.png"

# What the page shows, read in the page: each chart's series and markers,
# the cards, the lists, and any element that markup from the data would
# have made.
READ_PAGE = """
(() => {
  const chart = (id) => {
    const svg = document.getElementById(id);
    return {
      points: Number(svg.dataset.points || 0),
      series: [...svg.querySelectorAll("path[data-series]")].map((path) => ({
        name: path.dataset.series,
        count: Number(path.dataset.count),
        last: path.dataset.last === "" ? null : Number(path.dataset.last),
      })),
      markers: [...svg.querySelectorAll("g.marker-group title")]
        .map((title) => title.textContent),
    };
  };
  const texts = (selector) =>
    [...document.querySelectorAll(selector)].map((e) => e.textContent);
  return {
    charts: {
      users: chart("chart-users"),
      replicas: chart("chart-replicas"),
      messages: chart("chart-messages"),
    },
    online: texts("#online .name"),
    onlineMarkup: document.getElementById("online").innerHTML,
    decisions: texts("#decisions .reason"),
    replicaRows: [...document.querySelectorAll("#replicas tbody tr")]
      .map((row) => [...row.cells].map((cell) => cell.textContent)),
    health: texts("#health li .name"),
    cards: {
      online: document.getElementById("online-count").textContent,
      registered: document.getElementById("registered").textContent,
      messages: document.getElementById("message-total").textContent,
      scaler: document.getElementById("scaler-state").textContent,
      replicas: document.getElementById("replica-ready").textContent,
    },
    images: document.images.length,
    scripts: document.scripts.length,
    bold: document.querySelectorAll("main b").length,
    overall: document.body.dataset.health,
  };
})()
"""

CHARTS_FILLED = f"""
(() => {{
  const ids = ["chart-users", "chart-replicas", "chart-messages"];
  return document.readyState === "complete" &&
    Number(document.body.dataset.refreshes || 0) >= 1 &&
    ids.every((id) =>
      Number(document.getElementById(id).dataset.points || 0) >=
        {SAMPLES_BEFORE_LOADING});
}})()
"""


class DashboardPageTests(TestCase):
    """
    The page, as a browser shows it.
    """

    timeout = 180

    def setUp(self) -> None:
        self.system = System(self)

    async def running_system(self) -> str:
        """
        Two replicas, the dashboard, then people coming online and chatting,
        an autoscaler that scales up, and a hostile name online; the
        dashboard's base URL once the replicas' figures show everyone.
        """
        system = self.system
        await system.replica("one")
        await system.replica("two")
        redis = await system.redis()
        dashboard = await system.dashboard_process()
        alice = await system.person("one", "alice")
        await self.pause(STEP_SECONDS)

        now = reactor.seconds()
        scaled = {
            "time": now,
            "users": 2,
            "current": 1,
            "desired": 2,
            "target": 2,
            "action": "scale-up",
            "reason": HOSTILE_REASON,
            "dry_run": False,
            "applied": True,
        }
        await record_decision(redis, scaled)
        await scaler_heartbeat(redis, {**scaled, "action": "hold"})
        bob = await system.person("two", "bob")
        await self.pause(STEP_SECONDS)

        for text in ("hello", "how are you", "fine"):
            alice.send(f"/msg bob {text}")
            await bob.expect(f"alice (private): {text}")
        await self.pause(STEP_SECONDS)
        hostile = Presence(HOSTILE, "one", reactor.seconds())
        await put_presence(redis, "hostile", hostile)
        bob.send("/msg * hello everyone")
        await alice.expect("bob to everyone: hello everyone")
        await self.pause(STEP_SECONDS)

        def everyone_counted(answer: Answer) -> bool:
            pods = answer.json()["pods"] or []
            return (
                sum(pod["users"] for pod in pods) == 2
                and sum(pod["messages_in"] for pod in pods) == 4
            )

        await until(
            dashboard.base + "/api/status",
            everyone_counted,
            "the replicas' figures",
            FIGURES_BOUND_SECONDS,
        )
        return dashboard.base

    async def test_page(self) -> None:
        """
        The page's charts hold the API's figures, with the decision marked;
        names and reasons show as text; there is no console error; a
        screenshot is saved in the test's temporary directory.
        """
        base = await self.running_system()

        profile = Path(self.mktemp())
        profile.mkdir(parents=True)
        browser = await Chromium.start(profile)
        self.addCleanup(browser.close)
        await browser.goto(base + "/")
        await browser.wait_for(CHARTS_FILLED, PAGE_BOUND_SECONDS, "charts filled")
        page: dict[str, Any] = await browser.evaluate(READ_PAGE)
        status = (await fetch(base + "/api/status")).json()
        metrics = (await fetch(base + "/api/metrics")).json()
        shot = Path(SCREENSHOT_NAME).absolute()
        await browser.screenshot(shot)
        Path("status.json").write_text(json.dumps(status, indent=2))
        print(f"\nscreenshot: {shot}\nstatus: {os.path.abspath('status.json')}")

        self.assertEqual(browser.problems, [])
        charts = page["charts"]
        users = charts["users"]["series"]
        self.assertEqual([(s["name"], s["last"]) for s in users], [("online", 3)])
        self.assertEqual(metrics["user_count"][-1], 3)
        self.assertGreaterEqual(users[0]["count"], SAMPLES_BEFORE_LOADING)
        replicas = {s["name"]: s["last"] for s in charts["replicas"]["series"]}
        self.assertEqual(replicas, {"replicas": 2, "ready": 2, "desired": 2})
        self.assertEqual(len(charts["replicas"]["markers"]), 1)
        self.assertIn("scale-up", charts["replicas"]["markers"][0])
        self.assertIn(HOSTILE_REASON, charts["replicas"]["markers"][0])
        rates = charts["messages"]["series"]
        self.assertEqual([s["name"] for s in rates], ["messages per second"])
        self.assertGreaterEqual(rates[0]["count"], SAMPLES_BEFORE_LOADING - 1)

        self.assertEqual(sorted(page["online"]), sorted(["alice", "bob", HOSTILE]))
        self.assertIn("&lt;img src=x onerror=alert(1)&gt;", page["onlineMarkup"])
        self.assertEqual(page["decisions"], [HOSTILE_REASON])
        self.assertEqual((page["images"], page["bold"]), (0, 0))
        self.assertEqual(page["scripts"], 2)
        rows = [row[:6] for row in page["replicaRows"]]
        expected = [
            [pod["id"], pod["status"]]
            + [str(pod[k]) for k in ("connections", "users")]
            + [str(pod[k]) for k in ("messages_in", "messages_out")]
            for pod in status["pods"]
        ]
        self.assertEqual(rows, expected)
        self.assertEqual([row[0] for row in rows], ["one", "two"])
        self.assertEqual(
            page["health"],
            ["PostgreSQL", "Redis", "Autoscaler", "replica one", "replica two"],
        )
        self.assertEqual(
            page["cards"],
            {
                "online": "3",
                "registered": "2 registered",
                "messages": str(status["total_messages"]),
                "scaler": "running",
                "replicas": "2 / 2",
            },
        )
        self.assertEqual(page["overall"], "healthy")

    async def pause(self, seconds: float) -> None:
        await deferLater(reactor, seconds, lambda: None)

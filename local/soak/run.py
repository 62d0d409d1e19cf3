"""The soak's run: the stack brought up, the plan played against it, the storm stopped and the stack settled."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from local.soak.base import SOAK_API_KEY, Send, SignalSend
from local.soak.checks import SoakChecks, SoakResult
from local.soak.hands import TraderHands
from local.soak.plan import BREAKEVEN_WAY, DEFAULT_FAULT_RATE, FAULT_COUNT, FAULT_PLAN, Step, breakeven_price, make_plan
from local.stack import LocalStack, StackConfig

RESTART_GRACE_S = 5.0  # how long the stack has to bring a killed streamer back before the soak does


class Soak(TraderHands, SoakChecks):
    """One soak: the stack started, the plan played, the storm stopped, the stack settled, then the checks."""

    # ---- lifecycle ----

    def stack_config(self) -> StackConfig:
        cfg = self.cfg
        return StackConfig(
            api_port=0,
            moto_port=0,
            paper_port=0,
            local_api_key=SOAK_API_KEY,
            cron_every_s=cfg.reconcile_every_s,
            crash_after_broker=self.chaos,
            paper_postbacks=True,  # as with Kite: order updates on the ticker and as postbacks
            extra_env={
                "PAPER_MARKET": "walk",
                "PAPER_SEED": str(cfg.seed),
                "PAPER_WALK_STEP_BPS": str(cfg.walk_step_bps),
                "RECONCILE_EVERY_S": str(cfg.reconcile_every_s),
                # One trader, many brackets: the account's limits are not what this soak tests.
                "DEFAULT_MAX_OPEN_BRACKETS": "100000",
                "DEFAULT_DAILY_LOSS_LIMIT": "1000000000",
                "PLACEMENT_RATE_LIMIT_PER_SECOND": "50",
                "POWERTOOLS_METRICS_DISABLED": "true",
            },
        )

    def run(self) -> SoakResult:
        started_wall = time.monotonic()
        plan = make_plan(self.cfg)
        stack = self.stack = LocalStack(self.stack_config())
        if self.chaos is not None:
            self.chaos.rate = 0  # no deaths while the stack comes up
        stack.start()
        try:
            if not stack.dev_account_seeded:
                raise RuntimeError("the soak's account could not be seeded (see the stack's log)")
            fault_rules, unaimed = self._fault_rules()
            self._paper("POST", "faults", {"rules": fault_rules})
            if unaimed:
                self.notes.append(f"fault kinds run unaimed at rate {DEFAULT_FAULT_RATE}: {', '.join(unaimed)}")
            if self.chaos is not None:
                self.chaos.rate = self.cfg.crash_rate
            self.say(
                f"soak seed {self.cfg.seed}: {self.cfg.brackets} alerts over ~{plan[-1].at:.0f} s, "
                f"{len(plan)} planned steps, faults: {', '.join(sorted({r['kind'] for r in fault_rules}))}"
            )
            self._play(plan)
            faults_fired = self._stop_the_storm()
            self._settle()
            result = self._check(faults_fired, time.monotonic() - started_wall)
        finally:
            stack.stop()
        result.wall_time_s = round(time.monotonic() - started_wall, 1)
        return result

    def _fault_rules(self) -> tuple[list[dict[str, Any]], list[str]]:
        from paper.faults import KINDS

        rules: list[dict[str, Any]] = []
        unaimed = []
        for kind in KINDS:
            aimed = FAULT_PLAN.get(kind)
            if aimed is None:
                unaimed.append(kind)
                aimed = [{"rate": DEFAULT_FAULT_RATE}]
            for rule in aimed:
                rate = min(rule["rate"] * self.cfg.fault_scale, 1.0)
                if rate > 0:
                    rules.append({**rule, "kind": kind, "rate": rate, "count": FAULT_COUNT})
        return rules, unaimed

    def _play(self, plan: list[Step]) -> None:
        self.started = time.monotonic()
        next_progress = self.cfg.progress_every_s
        for step in plan:
            while True:
                now = self._elapsed()
                self._cancel_due_resting(now)
                self._restart_check()
                if now >= next_progress:
                    self._progress()
                    next_progress += self.cfg.progress_every_s
                if now >= step.at:
                    break
                time.sleep(min(step.at - now, 0.25))
            getattr(self, f"_do_{step.kind}")(step)

    def _progress(self) -> None:
        from bracketflow.adapters.dynamo.brackets import BracketRepository

        open_now = Counter(b.status.value for b in BracketRepository().list_open())
        sent = len({s.index for s in self.sends})
        self.say(
            f"  {self._elapsed():6.0f} s: {sent} alerts sent, open {dict(open_now)}, "
            f"actions {dict(self.actions)}, client 5xx {len(self.client_errors)}"
        )

    # ---- steps ----

    def _do_alert(self, step: Step) -> None:
        alert = dict(step.data["alert"])
        symbol = alert["symbol"].split(":", 1)[1]
        ltp = self._ltp(symbol)
        if ltp is None:
            self.notes.append(f"alert {step.data['index']} not sent: no price for {symbol}")
            return
        tick = Decimal("0.05")
        away = tick * step.data["offset_ticks"]
        # A positive offset rests (below the market for a buy, above for a sell); a negative one crosses.
        price = ltp - away if alert["action"] == "buy" else ltp + away
        alert["entry_price"] = str((price / tick).quantize(Decimal(1), rounding=ROUND_HALF_UP) * tick)
        if BREAKEVEN_WAY in alert:
            alert["breakeven_at"] = breakeven_price(alert, Decimal(alert["entry_price"]), tick)
            del alert[BREAKEVEN_WAY]
            self.actions["breakeven_at"] += 1
        alert["apikey"] = SOAK_API_KEY
        body = json.dumps(alert)
        self.bodies[step.data["index"]] = body
        self._send(step.data["index"], body)
        self.actions["reverse" if alert.get("reverse") else "alert"] += 1
        if "targets" in alert:
            self.actions["scale_out"] += 1

    def _do_resend(self, step: Step) -> None:
        body = self.bodies.get(step.data["index"])
        if body is not None:
            self._send(step.data["index"], body)
            self.actions["resend"] += 1

    def _send(self, index: int, body: str) -> None:
        answer = self._client("POST", "/tradingview/webhook/bracket", data=body, headers={"Content-Type": "text/plain"})
        if answer is None:
            self.sends.append(Send(index, body, 0, None, None, "no answer"))
            return
        try:
            payload = answer.json()
        except ValueError:
            payload = {}
        if payload.get("reverse_of"):
            self.reversing.setdefault(index, list(payload["reverse_of"]))
        self.sends.append(
            Send(
                index,
                body,
                answer.status_code,
                payload.get("bracket_id"),
                payload.get("duplicate"),
                str(payload.get("message") or "")[:200],
                tuple(str(s.get("bracket_id")) for s in payload.get("shares") or ()),
            )
        )

    def _do_signal(self, step: Step) -> None:
        body = json.dumps({**step.data["signal"], "apikey": SOAK_API_KEY})
        self.signal_bodies[step.data["index"]] = body
        self._send_signal(step.data["index"], body)
        self.actions["closeall" if step.data["signal"]["action"] == "closeall" else "exit_signal"] += 1

    def _do_signal_resend(self, step: Step) -> None:
        body = self.signal_bodies.get(step.data["index"])
        if body is not None:
            self._send_signal(step.data["index"], body)
            self.actions["signal_resend"] += 1

    def _send_signal(self, index: int, body: str) -> None:
        answer = self._client("POST", "/tradingview/webhook/bracket", data=body, headers={"Content-Type": "text/plain"})
        try:
            payload = answer.json() if answer is not None else {}
        except ValueError:
            payload = {}
        self.signal_sends.append(
            SignalSend(
                index,
                body,
                0 if answer is None else answer.status_code,
                payload.get("duplicate"),
                list(payload.get("brackets") or []),
                str(payload.get("message") or ("no answer" if answer is None else ""))[:200],
            )
        )

    def _do_delete(self, step: Step) -> None:
        ids = {s.bracket_id for s in self.sends if s.index == step.data["index"] and s.bracket_id}
        for bracket_id in sorted(ids):
            self._client("DELETE", f"/api/v1/brackets/{bracket_id}", headers={"X-API-KEY": SOAK_API_KEY})
            self.actions["trader_delete"] += 1

    def _do_kill_streamer(self, step: Step) -> None:
        assert self.stack is not None
        child = next((c for c in self.stack.children if c.spec.name == "streamer" and c.alive), None)
        if child is None or child.proc is None:
            self.notes.append(f"{self._elapsed():.0f} s: no live streamer to kill")
            return
        old_pid = child.proc.pid
        os.kill(old_pid, signal.SIGKILL)
        child.proc.wait(10)
        self.actions["streamer_kill"] += 1
        self.killed = (time.monotonic() + RESTART_GRACE_S, old_pid, child)

    def _restart_check(self) -> None:
        """Given RESTART_GRACE_S, did the stack bring the streamer back? If not, the soak does what a supervisor
        would, from this thread (the stack's main thread: children die with the thread that started them)."""
        if self.killed is None:
            return
        deadline, old_pid, child = self.killed
        if self._streamer_pid() not in (None, old_pid):
            self.actions["streamer_restarted_by_stack"] += 1
            self.killed = None
        elif time.monotonic() >= deadline:
            assert self.stack is not None
            if child in self.stack.children:
                self.stack.children.remove(child)
            self.stack._start_child(child.spec, self.stack.config.streamer_restart)
            self.actions["streamer_restarted_by_soak"] += 1
            self.killed = None

    def _streamer_pid(self) -> int | None:
        assert self.stack is not None
        for c in self.stack.children:
            if c.spec.name == "streamer" and c.alive and c.proc is not None:
                return c.proc.pid
        return None

    # ---- quiet ----

    def _stop_the_storm(self) -> dict[str, int]:
        """Faults off, Lambdas stop dying, the trader's hands off, the market holds still."""
        if self.chaos is not None:
            self.chaos.rate = 0
        while self.killed is not None:
            self._restart_check()
            time.sleep(0.2)
        rules = self._paper("GET", "faults")["rules"]
        fired: Counter[str] = Counter()
        for rule in rules:
            fired[rule["kind"]] += int(rule["fired"])
        self._paper("POST", "faults", {"rules": []})
        self._paper("POST", "config", {"market": "manual"})
        self._cancel_due_resting(0, everything=True)
        if self._streamer_pid() is None:
            self.notes.append("the streamer was not running when the storm stopped")
        if self.actions["streamer_restarted_by_soak"]:
            self.notes.append(
                f"the stack did not bring a killed streamer back within {RESTART_GRACE_S:.0f} s "
                f"({self.actions['streamer_restarted_by_soak']} time(s)): the soak restarted it, as a supervisor would"
            )
        if self.chaos is not None:
            for function, n in sorted(self.chaos.fired.items()):
                fired[f"lambda_died:{function}"] += n
        for name in ("resend", "trader_delete", "streamer_kill"):
            fired[name] = self.actions[name]
        for name, n in self.actions.items():
            if name.startswith("hand_") and not name.endswith("_skipped"):
                fired[name] = n
        return dict(fired)

    def _fingerprint(self) -> tuple[Any, ...]:
        from bracketflow.adapters.dynamo.brackets import BracketRepository

        open_brackets = tuple(sorted((b.id, b.version) for b in BracketRepository().list_open()))
        timeline = self._paper("GET", "timeline?since=0")["next"]
        return open_brackets, timeline

    def _reconcile_runs_since(self, since: datetime) -> int:
        assert self.stack is not None
        sfn = self.stack.client("stepfunctions")
        arn = self.stack.state_machine_arn("ReconcileStateMachine")
        runs = sfn.list_executions(stateMachineArn=arn, statusFilter="SUCCEEDED")["executions"]
        return sum(1 for r in runs if r["startDate"] >= since)

    def _settle(self) -> None:
        """Wait, bounded, until nothing changes for quiet_for_s, no queue holds work (a message waiting out its
        visibility timeout is work still to come) and reconciliation has run twice since the storm."""
        quiet_since = datetime.now(UTC)
        deadline = time.monotonic() + self.cfg.settle_max_s
        last = self._fingerprint()
        unchanged_since = time.monotonic()
        while time.monotonic() < deadline:
            time.sleep(2)
            now = self._fingerprint()
            if now != last:
                last, unchanged_since = now, time.monotonic()
                continue
            if (
                time.monotonic() - unchanged_since >= self.cfg.quiet_for_s
                and self._reconcile_runs_since(quiet_since) >= 2
            ):
                self.say(f"  settled {self.cfg.settle_max_s - (deadline - time.monotonic()):.0f} s after the storm")
                return
        queued = {k: v for k, v in self._queued().items() if v}
        self.notes.append(
            f"not settled {self.cfg.settle_max_s:.0f} s after the storm stopped (checked anyway); queued: {queued}"
        )
        self.say(self.notes[-1])

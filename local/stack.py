"""LocalStack: the whole system on this machine from template.yaml (used by `python -m local` and the e2e tests).

start() brings the components up in order, each reporting starting/up/failed to `components`:
  api (the local API Gateway: listening first, so /health answers 503 while the rest comes up)
  aws (moto server + the template's resources) -> functions (handlers imported) -> events (pollers, timers)
  -> paper (the paper exchange, when paper/ has a __main__) -> streamer (when streamer/ has a __main__)
then seeds the dev account and opens the API routes. stop() undoes all of it, children included, and restores the
process environment it changed.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import sys
import uuid
from typing import Any

from local.activity import ExecutionActivity, TableActivity
from local.aws import MotoServer, provision
from local.components import FAILED, STARTING, STOPPED, UP, Components
from local.gateway import Gateway
from local.pollers import ScheduleTimer, SqsPoller, StreamPoller, Worker, schedule_interval_s, sqs_pollers
from local.processes import Child, ChildSpec, RestartPolicy, Supervisor
from local.runtime import FunctionError, LambdaRuntime, metrics_per_invocation, refuse_broker_calls_past_timeout
from local.stack_config import REPO_ROOT, StackConfig, ensure_port_free, free_port
from local.template import FunctionSpec, StateMachineSpec, Template, load_template
from local.websocket_api import LocalWebSocketApi, read_websocket_routes

log = logging.getLogger("local.stack")

_GC_THRESHOLD = (50_000, 20, 20)
DEV_ACCOUNT_ID = "local"


class LocalStack:
    def __init__(self, config: StackConfig | None = None):
        self.config = config or StackConfig()
        self.components = Components()
        self.template: Template | None = None
        self.runtime: LambdaRuntime | None = None
        self.moto: MotoServer | None = None
        self.gateway: Gateway | None = None
        self._undo_metrics: Any = None  # local.runtime.metrics_per_invocation, undone on stop
        self._undo_chaos: Any = None  # local.chaos.CrashAfterBroker.install, undone on stop
        self._undo_timeouts: Any = None  # local.runtime.refuse_broker_calls_past_timeout, undone after the chaos
        self.websocket: LocalWebSocketApi | None = None
        self.workers: list[Worker] = []
        self.children: list[Child] = []
        self.supervisors: list[Supervisor] = []
        self.paper_port: int | None = None
        self.dev_account_seeded = False
        self._saved_env: dict[str, str | None] = {}
        self._started = False
        self._frozen = False
        self._saved_gc_threshold: tuple[int, ...] = gc.get_threshold()

    # -- what callers need --

    @property
    def api_url(self) -> str:
        assert self.gateway is not None, "start() first"
        return self.gateway.url

    @property
    def websocket_url(self) -> str:
        """ws://host:port/<stage> of the template's WebSocket API (add ?apikey=...)."""
        assert self.websocket is not None, "start() first (and a template with a WebSocket API)"
        return self.websocket.url

    @property
    def aws_endpoint(self) -> str:
        assert self.moto is not None, "start() first"
        return self.moto.endpoint

    @property
    def paper_url(self) -> str | None:
        return None if self.paper_port is None else f"http://{self.config.host}:{self.paper_port}"

    def client(self, service: str) -> Any:
        """A boto3 client on the stack's moto server."""
        assert self.moto is not None, "start() first"
        return self.moto.client(service)

    def state_machine_arn(self, logical_id: str) -> str:
        assert self.template is not None
        return self.template.state_machines[logical_id].arn

    def queue_url(self, logical_id: str) -> str:
        assert self.template is not None
        return self.template.queues[logical_id].url

    def table_name(self, logical_id: str) -> str:
        assert self.template is not None
        return self.template.tables[logical_id].name

    def health(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, the /health body): every component's state, and how often each supervised child was restarted."""
        ok = self.components.all_up() and self._started
        states = self.components.states()
        status = "ok" if ok else ("degraded" if self._started else "starting")
        restarts = {s.child.spec.name: s.restarts for s in self.supervisors}
        return ok, {"status": status, "components": states, "restarts": restarts}

    # -- lifecycle --

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:  # noqa: C901, PLR0912, PLR0915 - the start in order: each step needs the one before
        cfg = self.config
        moto_port = free_port(cfg.host) if cfg.moto_port == 0 else cfg.moto_port
        self.paper_port = free_port(cfg.host) if cfg.paper_port == 0 else cfg.paper_port
        paper_url = f"http://{cfg.host}:{self.paper_port}"
        overrides = {"Broker": "paper", **cfg.parameter_overrides}
        self.template = template = load_template(
            cfg.template_path,
            parameter_overrides=overrides,
            region=cfg.region,
            stack_name=cfg.stack_name,
            aws_endpoint=f"http://{cfg.host}:{moto_port}",
        )
        if template.skipped:
            log.debug("not realised locally: %s", ", ".join(f"{k} ({v})" for k, v in template.skipped.items()))
        self.runtime = runtime = LambdaRuntime(template.functions)
        runtime.add_layers()
        self._undo_metrics = metrics_per_invocation()
        want_paper = cfg.paper if cfg.paper is not None else (REPO_ROOT / "paper" / "__main__.py").is_file()
        want_streamer = (
            cfg.streamer
            if cfg.streamer is not None
            else (REPO_ROOT / "streamer" / "streamer" / "__main__.py").is_file()
        )

        # Announce everything first, so /health names every component (and says 503) until all are up.
        for name in ("api", "aws", "functions", "events"):
            self.components.set(name, STARTING)
        if want_paper:
            self.components.set("paper", STARTING)
        if want_streamer:
            self.components.set("streamer", STARTING)

        with self._component("api"):
            if cfg.api_port:
                ensure_port_free(cfg.host, cfg.api_port, "the local API", "API_PORT")
            stage = str(next(iter(template.rest_apis.values()), {}).get("StageName", "local"))
            self.gateway = Gateway(template, runtime, self.health, cfg.host, cfg.api_port, stage)
            self.gateway.start()
            self.components.set("api", UP, self.gateway.url)

        ws_routes = read_websocket_routes(cfg.template_path, template.parameters)
        if ws_routes is not None:
            with self._component("websocket"):
                ws_port = cfg.websocket_port
                if ws_port is None:
                    ws_port = cfg.api_port + 1 if cfg.api_port else 0
                if ws_port:
                    ensure_port_free(cfg.host, ws_port, "the local WebSocket API", "WEBSOCKET_PORT")
                self.websocket = LocalWebSocketApi(ws_routes, runtime, cfg.host, ws_port)
                self.websocket.start()
                self.components.set("websocket", UP, self.websocket.url)

        with self._component("aws"):
            ensure_port_free(cfg.host, moto_port, "moto (the local AWS)", "MOTO_PORT")
            self.moto = MotoServer(cfg.host, moto_port)
            self.moto.start()
            self._set_environment(template, paper_url)
            self._undo_timeouts = refuse_broker_calls_past_timeout(os.environ["BROKER_BASE_URL"])
            if cfg.crash_after_broker is not None:
                self._undo_chaos = cfg.crash_after_broker.install(os.environ["BROKER_BASE_URL"])
            self.moto.runtime = runtime
            provision(self.moto, template)
            self.components.set("aws", UP, f"{self.moto.endpoint} (moto)")

        with self._component("functions"):
            runtime.preload()
            self.components.set("functions", UP, f"{len(template.functions)} handler(s) in-process")

        with self._component("events"):
            self._start_event_sources(template, runtime)
            kinds: dict[str, int] = {}
            for worker in self.workers:
                kind = worker.name.split(":", 1)[0]
                if kind == "activity":
                    continue
                kinds[kind] = kinds.get(kind, 0) + 1
            summary = ", ".join(f"{n} {k}" for k, n in kinds.items()) or "none"
            self.components.set("events", UP, summary)

        if cfg.seed_dev_account:
            self._seed_dev_account()

        if want_paper:
            with self._component("paper"):
                ensure_port_free(cfg.host, self.paper_port, "the paper exchange", "PAPER_PORT")
                self._start_child(
                    ChildSpec(
                        "paper",
                        [sys.executable, "-m", "paper"],
                        env={
                            "PAPER_PORT": str(self.paper_port),
                            "PAPER_HOST": cfg.host,
                            # the "Kite app's" registered redirect URL: this stack's login callback
                            "PAPER_REDIRECT_URL": f"{self.api_url}/broker/callback",
                            # Kite's postbacks, to this stack's postback route (the watcher)
                            "PAPER_POSTBACK_URL": f"{self.api_url}/broker/postback" if cfg.paper_postbacks else "",
                        },
                        cwd=REPO_ROOT,
                        ready_port=self.paper_port,
                    ),
                    # The broker's state lives in its memory: a restarted one would know none of the orders placed.
                    RestartPolicy(restart=False),
                )
                self.components.set("paper", UP, paper_url)

        if want_streamer:
            with self._component("streamer"):
                container_env: dict[str, str] = {}
                for env in template.container_environment.values():
                    container_env.update(env)
                # The template's ticker is Kite's; locally the streamer reads the paper exchange's feed.
                container_env["BROKER_TICKER_URL"] = f"ws://{cfg.host}:{self.paper_port}/ws"
                container_env["STAGE"] = "local"
                # ECS restarts the task when it stops; the streamer resumes its brackets from the table when it starts.
                self._start_child(
                    ChildSpec("streamer", [sys.executable, "-m", "streamer"], env=container_env, cwd=REPO_ROOT),
                    cfg.streamer_restart,
                )
                self.components.set("streamer", UP, "feed from the paper exchange")

        # Everything loaded so far (handlers, boto3/moto models, the template) lives as long as the stack: keep the
        # collector from walking it. A full collection of this process took ~200-280 ms with every thread stopped,
        # about every 4 s under alerts: the slowest webhook answers were those pauses.
        # Young collections every 700 allocations, and a full one every ~10th of those, are tuned for small programs;
        # this process allocates fast (moto, boto3, the ASL interpreter): collect less often.
        gc.collect()
        gc.freeze()
        self._saved_gc_threshold = gc.get_threshold()
        gc.set_threshold(*_GC_THRESHOLD)
        self._frozen = True
        self._started = True
        assert self.gateway is not None
        self.gateway.accepting.set()

    class _ComponentScope:
        def __init__(self, stack: LocalStack, name: str):
            self.stack, self.name = stack, name

        def __enter__(self) -> None:
            self.stack.components.set(self.name, STARTING)

        def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
            if exc is not None:
                self.stack.components.set(self.name, FAILED, str(exc))

    def _component(self, name: str) -> LocalStack._ComponentScope:
        return LocalStack._ComponentScope(self, name)

    def _set_environment(self, template: Template, paper_url: str) -> None:
        """One environment for every in-process function (they share names and values), set before any import."""
        assert self.moto is not None
        cfg = self.config
        env = {
            **template.function_environment(),
            "STAGE": "local",  # the app's signal that it runs on the local stack (not the template's dev/prod)
            "AWS_ENDPOINT_URL": self.moto.endpoint,
            "AWS_DEFAULT_REGION": cfg.region,
            "AWS_REGION": cfg.region,
            "AWS_ACCESS_KEY_ID": "local",
            "AWS_SECRET_ACCESS_KEY": "local",
            "AWS_SESSION_TOKEN": "local",
            "POWERTOOLS_TRACE_DISABLED": "true",  # no X-Ray daemon on a laptop
            # Paper mode's broker is this stack's own paper exchange (the template's address is its default port).
            "BROKER_BASE_URL": paper_url,
            "BROKER_TICKER_URL": f"ws://{cfg.host}:{self.paper_port}/ws",
            "PAPER_PORT": str(self.paper_port),
            "LOCAL_API_URL": f"http://{cfg.host}:{self.gateway.port if self.gateway else cfg.api_port}",
            **({"WEBSOCKET_MANAGEMENT_URL": self.websocket.management_url} if self.websocket else {}),
            **cfg.extra_env,
        }
        for key, value in env.items():
            if key not in self._saved_env:
                self._saved_env[key] = os.environ.get(key)
            os.environ[key] = value
        from bracketflow.adapters.aws import reset_clients

        reset_clients()

    def _restore_environment(self) -> None:
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = {}
        try:
            from bracketflow.adapters.aws import reset_clients

            reset_clients()
        except ImportError:  # pragma: no cover
            pass

    def _start_event_sources(self, template: Template, runtime: LambdaRuntime) -> None:  # noqa: C901, PLR0912 - one poller per kind of event source in the template
        assert self.moto is not None
        sqs = self.moto.client("sqs")
        streams = self.moto.client("dynamodbstreams")
        ddb = self.moto.client("dynamodb")
        for fn in template.functions.values():
            for event in fn.events:
                if event.properties.get("Enabled", True) is False:
                    continue
                if event.type == "SQS":
                    for index in range(sqs_pollers(event.properties)):
                        self.workers.append(SqsPoller(runtime, fn, event, template, sqs, index=index))
                elif event.type == "DynamoDB":
                    table = template.table_by_stream_arn(str(event.properties["Stream"]))
                    if table is None:
                        raise ValueError(f"{fn.logical_id}.{event.name}: stream of a table not in the template")
                    stream_arn = ddb.describe_table(TableName=table.name)["Table"]["LatestStreamArn"]
                    forget = _iterator_forgetter(self.config.region)
                    self.workers.append(StreamPoller(runtime, fn, event, stream_arn, streams, forget))
                elif event.type in ("Schedule", "ScheduleV2") and self.config.schedules:
                    self._add_timer(fn, event)
                elif event.type not in ("Api", "Schedule", "ScheduleV2"):
                    log.debug("%s.%s: %s events are not played locally", fn.logical_id, event.name, event.type)
        if self.config.activity_log:
            for table in template.tables.values():
                if table.has_stream:
                    stream_arn = ddb.describe_table(TableName=table.name)["Table"]["LatestStreamArn"]
                    forget = _iterator_forgetter(self.config.region)
                    self.workers.append(TableActivity(table, stream_arn, streams, forget))
            if template.state_machines:
                machines = list(template.state_machines.values())
                self.workers.append(ExecutionActivity(machines, self.moto.client("stepfunctions")))
        if self.config.schedules:
            for sm in template.state_machines.values():
                for event in sm.events:
                    if event.type in ("Schedule", "ScheduleV2"):
                        self._add_timer(sm, event)
        for worker in self.workers:
            worker.start()

    def _add_timer(self, target: FunctionSpec | StateMachineSpec, event: Any) -> None:
        expression = str(event.properties.get("Schedule") or event.properties.get("ScheduleExpression"))
        interval = self.config.schedule_every_s or schedule_interval_s(expression, self.config.cron_every_s)
        timer = ScheduleTimer(target, event, interval, self._fire_schedule)
        if timer.enabled:
            self.workers.append(timer)

    def _fire_schedule(self, target: FunctionSpec | StateMachineSpec, payload: Any) -> None:
        if isinstance(target, StateMachineSpec):
            assert self.moto is not None
            self.moto.client("stepfunctions").start_execution(
                stateMachineArn=target.arn, name=f"schedule-{uuid.uuid4().hex[:12]}", input=json.dumps(payload)
            )
        else:
            assert self.runtime is not None
            # a failure is logged by the runtime; EventBridge would retry, a local timer just fires again
            with contextlib.suppress(FunctionError):
                self.runtime.invoke(target.logical_id, payload)

    def _seed_dev_account(self) -> None:
        try:
            from bracketflow.services.accounts import ensure_account
        except ImportError as exc:
            log.warning("dev account not seeded: bracketflow.services.accounts.ensure_account is unavailable (%s)", exc)
            return
        try:
            ensure_account(DEV_ACCOUNT_ID, "Local developer", self.config.local_api_key)
        except Exception as exc:
            log.warning("dev account not seeded: %s: %s", type(exc).__name__, exc)
            return
        self.dev_account_seeded = True
        log.info("dev account %r seeded with the local API key", DEV_ACCOUNT_ID)

    def _start_child(self, spec: ChildSpec, policy: RestartPolicy) -> None:
        path = os.pathsep.join(
            [str(REPO_ROOT / "layers" / "common"), str(REPO_ROOT / "streamer"), str(REPO_ROOT)]
            + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
        )
        spec.env = {**spec.env, "PYTHONPATH": path}
        child = Child(spec, _child_output)
        self.children.append(child)
        child.start()
        child.wait_ready()
        supervisor = Supervisor(child, policy, lambda state, detail: self.components.set(spec.name, state, detail))
        self.supervisors.append(supervisor)
        supervisor.start()

    def stop(self) -> None:
        """Stop everything this stack started, newest first; safe to call twice or after a failed start."""
        if self.gateway is not None:
            self.gateway.accepting.clear()
        self._started = False
        self._stop_processes()
        self._stop_servers()
        if self._undo_metrics is not None:
            self._undo_metrics()
            self._undo_metrics = None
        if self._undo_chaos is not None:
            self._undo_chaos()
            self._undo_chaos = None
        if self._undo_timeouts is not None:
            self._undo_timeouts()
            self._undo_timeouts = None
        self._restore_environment()
        if self._frozen:
            gc.set_threshold(*self._saved_gc_threshold)
            gc.unfreeze()  # what the stack held can be collected again
            self._frozen = False
        for name in self.components.states():
            self.components.set(name, STOPPED)

    def _stop_processes(self) -> None:
        """The supervisors first (so nothing restarts), then the children newest first, then the pollers."""
        for supervisor in self.supervisors:
            supervisor.stop()
        self.supervisors = []
        for child in reversed(self.children):
            try:
                child.stop()
            except Exception:
                log.exception("stopping %s", child.spec.name)
            self.components.set(child.spec.name, STOPPED)
        self.children = []
        for worker in self.workers:
            worker.stop()
        for worker in self.workers:
            worker.join()
        self.workers = []

    def _stop_servers(self) -> None:
        """moto (its running executions stopped first), then the WebSocket API, then the REST gateway."""
        if self.moto is not None:
            self._stop_running_executions()
            self.moto.runtime = None
            self.moto.stop()
            self.moto = None
        if self.websocket is not None:
            self.websocket.stop()
            self.websocket = None
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None

    def _stop_running_executions(self) -> None:
        """Executions parked on a Wait or a task token would otherwise wake up later against a stopped server."""
        if self.moto is None or self.template is None:
            return
        try:
            sfn = self.moto.client("stepfunctions")
            for sm in self.template.state_machines.values():
                running = sfn.list_executions(stateMachineArn=sm.arn, statusFilter="RUNNING")["executions"]
                for execution in running:
                    sfn.stop_execution(executionArn=execution["executionArn"], cause="the local stack stopped")
        except Exception:
            log.debug("could not stop running executions", exc_info=True)


def _child_output(name: str, line: str) -> None:
    logging.getLogger(f"local.{name}").info("%s", line)


def _iterator_forgetter(region: str) -> Any:
    """Drops used shard iterators from moto's in-process backend (it keeps every one it hands out, forever)."""
    from moto.dynamodbstreams.models import dynamodbstreams_backends

    from local.template import ACCOUNT_ID

    def forget(iterator: str) -> None:
        dynamodbstreams_backends[ACCOUNT_ID][region].shard_iterators.pop(iterator, None)

    return forget

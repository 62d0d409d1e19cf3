"""Reading template.yaml the way CloudFormation + SAM would: short tags, Globals, parameters, conditions, names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local.template import load_template

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).parent / "fixtures" / "local_stack" / "template.yaml"


def test_short_tags_globals_and_parameters_resolve_to_local_names():
    # When the fixture template is loaded for a moto server on port 5999
    tpl = load_template(FIXTURE, aws_endpoint="http://127.0.0.1:5999")

    # Then !Sub/!Ref/!GetAtt resolve to local names, ARNs and URLs, and Globals reach every function
    assert tpl.tables["ProbeTable"].name == "probe-test"
    worker = tpl.functions["WorkerFunction"]
    assert worker.environment == {
        "TABLE_NAME": "probe-test",
        "FEE_POINTS": "5",
        "QUEUE_NAME": "bracketflow-local-WorkQueue",
    }
    assert worker.timeout == 5
    assert worker.layer_dirs == [REPO / "layers" / "common"]
    queue = tpl.queues["WorkQueue"]
    assert queue.url == "http://127.0.0.1:5999/123456789012/bracketflow-local-WorkQueue"
    assert queue.dead_letter_arn == tpl.queues["WorkDeadLetterQueue"].arn
    assert worker.events[0].properties["Queue"] == queue.arn
    assert tpl.functions["WatchFunction"].events[0].properties["Stream"].startswith(tpl.tables["ProbeTable"].arn)


def test_parameter_overrides_and_conditions_change_the_result():
    # When Stage is overridden to prod (IsProd true) and FeePoints to 7
    tpl = load_template(FIXTURE, parameter_overrides={"Stage": "prod", "FeePoints": "7", "NotAParameter": "x"})

    # Then names, the conditional env var and the parameter follow
    assert tpl.tables["ProbeTable"].name == "probe-prod"
    env = tpl.functions["FeeFunction"].environment
    assert (env["PROD_ONLY"], env["FEE_POINTS"]) == ("yes", "7")
    assert "NotAParameter" not in tpl.parameters


def test_state_machine_definition_gets_its_substitutions():
    tpl = load_template(FIXTURE)
    definition = tpl.state_machines["ApprovalWorkflow"].definition
    assert definition["States"]["Pause"]["Seconds"] == 1
    assert definition["States"]["AddFee"]["Resource"] == tpl.functions["FeeFunction"].arn
    assert "${" not in json.dumps(definition)


def test_a_parameter_without_default_or_value_is_a_clear_error(tmp_path):
    template = tmp_path / "template.yaml"
    template.write_text("Parameters:\n  Token: {Type: String}\nResources: {}\n")
    with pytest.raises(ValueError, match=r"without a default need a value: \['Token'\]"):
        load_template(template)


def test_the_apps_template_loads_and_every_function_handler_file_exists():
    # Given the real template.yaml
    tpl = load_template(REPO / "template.yaml")

    # Then every function it declares points at a handler module that exists
    assert tpl.functions, "template.yaml declares no functions"
    for fn in tpl.functions.values():
        module = fn.handler.rpartition(".")[0].replace(".", "/")
        assert (fn.code_dir / f"{module}.py").is_file(), f"{fn.logical_id}: {fn.code_dir}/{module}.py is missing"


def test_eventbridge_rules_and_scheduler_schedules_become_their_targets_schedules(tmp_path):
    # Given a rule targeting a function and a Scheduler schedule (IST market hours) targeting a state machine
    (tmp_path / "fn").mkdir()
    (tmp_path / "sm.asl.json").write_text('{"StartAt": "Done", "States": {"Done": {"Type": "Succeed"}}}')
    (tmp_path / "template.yaml").write_text(
        """
Resources:
  SyncFunction:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: fn/, Handler: app.handler}
  Reconcile:
    Type: AWS::Serverless::StateMachine
    Properties: {DefinitionUri: sm.asl.json}
  EveryFiveMinutes:
    Type: AWS::Events::Rule
    Properties:
      ScheduleExpression: rate(5 minutes)
      Targets: [{Id: sync, Arn: !GetAtt SyncFunction.Arn, Input: '{"full": true}'}]
  MarketHours:
    Type: AWS::Scheduler::Schedule
    Properties:
      ScheduleExpression: cron(* 9-15 ? * MON-FRI *)
      ScheduleExpressionTimezone: Asia/Kolkata
      State: DISABLED
      FlexibleTimeWindow: {Mode: "OFF"}
      Target: {Arn: !Ref Reconcile, RoleArn: arn:aws:iam::123456789012:role/x}
"""
    )

    # When it is loaded
    tpl = load_template(tmp_path / "template.yaml")

    # Then each target carries the schedule as one of its events (the disabled one marked so)
    (sync,) = tpl.functions["SyncFunction"].events
    assert (sync.name, sync.type, sync.properties) == (
        "EveryFiveMinutes",
        "Schedule",
        {"Schedule": "rate(5 minutes)", "Input": '{"full": true}', "Enabled": True},
    )
    (market,) = tpl.state_machines["Reconcile"].events
    assert market.properties["Schedule"].startswith("cron(")
    assert market.properties["Enabled"] is False
    assert "EveryFiveMinutes" not in tpl.skipped

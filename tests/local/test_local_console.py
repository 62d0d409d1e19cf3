"""What `make run` prints as things move: one readable line per table change and per log record."""

from __future__ import annotations

import logging

from local.__main__ import ReadableFormatter
from local.activity import describe_change


def test_a_status_change_on_a_stream_record_reads_as_old_to_new():
    # Given a MODIFY record whose status moved from ENTRY_PLACED to ENTRY_FILLED
    record = {
        "eventName": "MODIFY",
        "dynamodb": {
            "Keys": {"pk": {"S": "BRACKET#br_1"}, "sk": {"S": "STATE"}},
            "OldImage": {"pk": {"S": "BRACKET#br_1"}, "status": {"S": "ENTRY_PLACED"}, "version": {"N": "2"}},
            "NewImage": {"pk": {"S": "BRACKET#br_1"}, "status": {"S": "ENTRY_FILLED"}, "version": {"N": "3"}},
        },
    }

    # Then the line names the item and the transition, and leaves the other attributes out
    assert describe_change(record) == "MODIFY pk=BRACKET#br_1 sk=STATE status ENTRY_PLACED -> ENTRY_FILLED"


def test_a_removed_item_shows_its_last_status():
    record = {
        "eventName": "REMOVE",
        "dynamodb": {"Keys": {"pk": {"S": "X"}}, "OldImage": {"pk": {"S": "X"}, "status": {"S": "CLOSED"}}},
    }
    assert describe_change(record) == "REMOVE pk=X status CLOSED -> -"


def test_log_records_read_as_one_line_with_the_component_and_extra_fields():
    # Given an app log record with an extra field, and a local-stack warning
    app = logging.LogRecord("bracketflow", logging.INFO, __file__, 1, "entry placed", None, None)
    app.bracket_id = "br_1"
    warning = logging.LogRecord("local.api", logging.WARNING, __file__, 1, "slow %s", ("handler",), None)

    # Then each is one line: time, component, level when not INFO, message, extras as k=v
    app_line = ReadableFormatter().format(app)
    warning_line = ReadableFormatter().format(warning)
    assert app_line.endswith(" app        entry placed  bracket_id=br_1")
    assert warning_line.endswith(" api        WARNING slow handler")
    assert "\n" not in app_line + warning_line


def test_an_app_line_names_the_function_whose_invocation_wrote_it():
    from bracketflow.observability import logger

    # Given a line logged during a local invocation of the PlaceEntry function (the runtime names it in the thread)
    record = logging.LogRecord("bracketflow", logging.INFO, __file__, 1, "entry placed", None, None)
    logger.thread_safe_append_keys(function_name="bracketflow-local-PlaceEntryFunction")
    try:
        line = ReadableFormatter().format(record)
    finally:
        logger.thread_safe_clear_keys()
    # Then the component is the function, not "app"
    assert line.endswith(" PlaceEntry entry placed")

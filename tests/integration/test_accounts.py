"""Accounts and keys: random, shown once, stored only as a peppered hash; ensure_account for the local stack."""

# ruff: noqa: F811  (pytest fixtures imported from tests.support.intake are redefined as test parameters)
from __future__ import annotations

import hashlib

import pytest

from tests.support.intake import aws, bracket_request, call_api  # noqa: F401

PLACE = "/api/v1/placebracketorder"


def test_a_new_account_key_is_random_opens_the_account_and_is_stored_only_as_a_hash(aws):
    from bracketflow.services.accounts import authenticate_api_key, create_account

    a, key_a = create_account("Asha")
    b, key_b = create_account("Ravi")
    assert key_a != key_b and len(key_a) > 40 and a.account_id != b.account_id
    assert authenticate_api_key(key_a).account_id == a.account_id
    everything = str(aws.items())
    assert key_a not in everything and key_b not in everything
    # Not a plain (unpeppered) hash either: the stored key id is an HMAC with the secret pepper
    assert hashlib.sha256(key_a.encode()).hexdigest() not in everything


def test_ensure_account_is_idempotent_and_seeds_a_working_key(aws):
    from bracketflow.services.accounts import ensure_account

    ensure_account("local", "Local trader", "dev-key-123")
    ensure_account("local", "Local trader", "dev-key-123")
    assert len(aws.items("ACCOUNT#local")) == 1 and len(aws.items("APIKEY#")) == 1
    assert call_api("POST", PLACE, bracket_request("dev-key-123")).status == 200
    assert "dev-key-123" not in str(aws.items())


def test_ensure_account_adds_a_new_key_to_an_existing_account(aws):
    from bracketflow.services.accounts import authenticate_api_key, ensure_account

    ensure_account("local", "Local trader", "first-key")
    ensure_account("local", "Local trader", "second-key")
    assert authenticate_api_key("first-key").account_id == authenticate_api_key("second-key").account_id == "local"


def test_ensure_account_refuses_a_key_that_opens_another_account(aws):
    from bracketflow.errors import ValidationFailed
    from bracketflow.services.accounts import ensure_account

    ensure_account("one", "One", "shared-key")
    with pytest.raises(ValidationFailed):
        ensure_account("two", "Two", "shared-key")


def test_a_duplicate_account_id_is_refused(aws):
    from bracketflow.errors import ValidationFailed
    from bracketflow.services.accounts import create_account

    create_account("Asha", account_id="acc_1")
    with pytest.raises(ValidationFailed):
        create_account("Asha again", account_id="acc_1")


def test_the_admin_cli_prints_the_key_once_and_it_works(aws, capsys):
    from bracketflow.admin import main

    assert main(["create-account", "Asha", "--id", "acc_cli"]) == 0
    out = capsys.readouterr().out
    key = next(line.split()[-1] for line in out.splitlines() if line.startswith("api_key:"))
    assert "acc_cli" in out and "cannot be shown again" in out
    assert call_api("POST", PLACE, bracket_request(key)).status == 200
    # And a token made by the CLI places brackets for its strategy
    assert main(["create-token", "acc_cli", "swing"]) == 0
    token = capsys.readouterr().out.split(": ", 1)[1].split()[0]
    assert token.startswith("bfw_")
    assert main(["revoke-token", "acc_cli", token]) == 0
    assert main(["revoke-token", "acc_cli", token + "x"]) == 2


def test_the_pepper_is_created_on_the_local_stack_and_required_elsewhere(aws, monkeypatch):
    from bracketflow.adapters.aws import reset_clients
    from bracketflow.adapters.secrets import get_pepper, reset_pepper_cache

    pepper = get_pepper()
    assert len(pepper) == 64 and aws.items() == []  # a secret, not a table item
    monkeypatch.setenv("STAGE", "prod")
    monkeypatch.setenv("API_KEY_PEPPER_SECRET_NAME", "missing/pepper")
    reset_clients()
    reset_pepper_cache()
    with pytest.raises(RuntimeError, match="pepper"):
        get_pepper()

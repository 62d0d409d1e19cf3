"""Account administration from a terminal: `make account NAME=...` or `python -m bracketflow.admin ...`.

  create-account NAME [--id ID]            a new account; prints its API key ONCE (only its hash is stored)
  create-token ACCOUNT_ID STRATEGY         a webhook token for one strategy; printed once
  revoke-token ACCOUNT_ID TOKEN            the token stops working at once
  set-capital ACCOUNT_ID RUPEES            the trading capital that risk_percent alerts size from

Without --stack it talks to whatever TABLE_NAME / AWS_ENDPOINT_URL point at (the local stack's moto server).
With --stack NAME (make account STACK=bracketflow-dev) it reads that deployed stack's outputs (CloudFormation
DescribeStacks in AWS_DEFAULT_REGION): its region, table and API-key pepper secret, so the key works against that
stack. It never creates a secret there: a missing pepper is an error, not a new pepper that no key would match.
"""

from __future__ import annotations

import argparse
import os
import sys
from decimal import Decimal, InvalidOperation

from bracketflow.errors import BracketflowError, ValidationFailed
from bracketflow.services import accounts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bracketflow.admin", description=__doc__.splitlines()[0])
    parser.add_argument("--stack", default=None, help="a deployed stack's name: use its table and pepper secret")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create-account", help="create an account and print its API key once")
    create.add_argument("name")
    create.add_argument("--id", dest="account_id", default=None)
    token = sub.add_parser("create-token", help="create a webhook token for one strategy")
    token.add_argument("account_id")
    token.add_argument("strategy")
    revoke = sub.add_parser("revoke-token", help="revoke a webhook token")
    revoke.add_argument("account_id")
    revoke.add_argument("token")
    capital = sub.add_parser("set-capital", help="set the capital risk_percent sizes from")
    capital.add_argument("account_id")
    capital.add_argument("rupees")
    args = parser.parse_args(argv)
    if args.stack and not _point_at_stack(args.stack):
        return 2
    try:
        if args.command == "create-account":
            account, key = accounts.create_account(args.name, account_id=args.account_id)
            print(f"account_id: {account.account_id}")
            print(f"api_key:    {key}")
            print("Keep the key now: it is stored only as a hash and cannot be shown again.")
        elif args.command == "create-token":
            record, value = accounts.create_webhook_token(args.account_id, args.strategy)
            print(f"webhook token for strategy {record.strategy}: {value}")
            print("Alert URL: <ApiUrl>/tradingview/webhook/bracket/" + value)
        elif args.command == "set-capital":
            accounts.set_capital(args.account_id, _rupees(args.rupees))
            print(f"capital of {args.account_id}: {args.rupees}")
            print("New alerts size from it within CREDENTIAL_CACHE_SECONDS (30 s) on a warm Lambda.")
        else:
            accounts.revoke_webhook_token(args.account_id, args.token)
            print("revoked")
    except BracketflowError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


def _rupees(text: str) -> Decimal:
    try:
        return Decimal(text)
    except InvalidOperation:
        raise ValidationFailed(f"not an amount in rupees: {text!r}") from None


def _point_at_stack(stack_name: str) -> bool:
    """Point this process at the deployed stack's region, table and pepper; False (and why, on stderr) if it can't."""
    from bracketflow.adapters import stack as deployed
    from bracketflow.adapters.aws import reset_clients
    from bracketflow.adapters.secrets import reset_pepper_cache
    from bracketflow.settings import get_settings

    region = get_settings().region
    try:
        found = deployed.describe(stack_name, region)
        if not deployed.pepper_exists(found):
            print(
                f"error: stack {stack_name!r} names the pepper secret {found.pepper_secret!r}, which does not exist "
                f"in {found.region}; nothing was created (a new pepper would make every key fail). Redeploy the stack.",
                file=sys.stderr,
            )
            return False
    except deployed.StackNotReady as exc:
        print(f"error: {exc}", file=sys.stderr)
        return False
    # The settings are read from the environment, once: set them, then let them be read again.
    os.environ.update(
        {
            "AWS_DEFAULT_REGION": found.region,
            "AWS_REGION": found.region,
            "TABLE_NAME": found.table_name,
            "API_KEY_PEPPER_SECRET_NAME": found.pepper_secret,
            "STAGE": found.stage if found.stage != "local" else "deployed",  # never the local stack's create-on-read
        }
    )
    reset_clients()
    reset_pepper_cache()
    print(f"stack {stack_name} ({found.region}, stage {found.stage}): table {found.table_name}", file=sys.stderr)
    return True


if __name__ == "__main__":
    sys.exit(main())

"""Account administration from a terminal: `make account NAME=...` or `python -m bracketflow.admin ...`.

  create-account NAME [--id ID]            a new account; prints its API key ONCE (only its hash is stored)
  create-token ACCOUNT_ID STRATEGY         a webhook token for one strategy; printed once
  revoke-token ACCOUNT_ID TOKEN            the token stops working at once

It talks to whatever TABLE_NAME / AWS_ENDPOINT_URL point at (the local stack's moto server, or your AWS account).
"""

from __future__ import annotations

import argparse
import sys

from bracketflow.errors import BracketflowError
from bracketflow.services import accounts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bracketflow.admin", description=__doc__.splitlines()[0])
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
    args = parser.parse_args(argv)
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
        else:
            accounts.revoke_webhook_token(args.account_id, args.token)
            print("revoked")
    except BracketflowError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

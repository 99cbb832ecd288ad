"""`tov-admin`: management commands (API keys, migrations) that run next to the database."""

from __future__ import annotations

import argparse
import sys

from app.core.auth import create_key, revoke_key
from app.core.db import get_sessionmaker
from app.migrate import upgrade_database


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tov-admin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    keys = sub.add_parser("keys", help="create or revoke API keys")
    keys_sub = keys.add_subparsers(dest="action", required=True)
    create = keys_sub.add_parser("create", help="create a key; it is printed once")
    create.add_argument("--tenant", required=True)
    revoke = keys_sub.add_parser("revoke", help="revoke keys by their visible prefix")
    revoke.add_argument("prefix", help="the 8 characters after 'tov_'")
    sub.add_parser("migrate", help="apply the database migrations")
    args = parser.parse_args(argv)

    if args.command == "migrate":
        upgrade_database()
        print("database is at the latest revision")
        return 0
    with get_sessionmaker()() as session:
        if args.action == "create":
            row, key = create_key(session=session, tenant_name=args.tenant)
            session.commit()
            print(key)
            print(
                f"created key {row.prefix} for tenant {args.tenant!r}; store it now, "
                "it is not shown again",
                file=sys.stderr,
            )
            return 0
        count = revoke_key(session=session, prefix=args.prefix.removeprefix("tov_"))
        session.commit()
        print(f"revoked {count} key(s)")
        return 0 if count else 1


if __name__ == "__main__":
    sys.exit(main())

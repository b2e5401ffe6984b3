"""og-server: run the server, migrate its database, and manage tokens.

  og-server --config PATH                      run (gunicorn, threaded worker)
  og-server --config PATH db upgrade           create or migrate the schema
  og-server --config PATH token create --role admin [--name NAME]
  og-server --config PATH token ensure --role gateway --name NAME --from-env VAR
  og-server --config PATH user create --username NAME --role viewer|editor|admin [--password-env VAR]
  og-server --config PATH user ensure --username NAME --role ROLE --password-env VAR
"""

from __future__ import annotations

import argparse
import getpass
import os
import secrets
import sys

from . import config as config_mod, create_app, init_db
from .serving import serve
from .services import tokens, users


def _parser():
    parser = argparse.ArgumentParser(prog="og-server", description="The outputguard.egress server.")
    parser.add_argument("--config", "-server-conf-path", dest="config", metavar="PATH",
                        help="the server's YAML configuration file")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("serve", help="run the server (the default)")
    dbp = sub.add_parser("db", help="database schema")
    dbp.add_argument("action", choices=["upgrade"])
    tok = sub.add_parser("token", help="API and gateway tokens")
    tsub = tok.add_subparsers(dest="action", required=True)
    create = tsub.add_parser("create", help="make a new token and print it once")
    create.add_argument("--role", required=True, choices=["viewer", "editor", "admin", "gateway"])
    create.add_argument("--name", help="a name for the token (default: <role>-<random>)")
    ensure = tsub.add_parser("ensure", help="register a given secret (from Vault) under a name")
    ensure.add_argument("--role", required=True, choices=["viewer", "editor", "admin", "gateway"])
    ensure.add_argument("--name", required=True)
    ensure.add_argument("--from-env", required=True, metavar="VAR", help="environment variable holding the secret")
    usr = sub.add_parser("user", help="UI users")
    usub = usr.add_subparsers(dest="action", required=True)
    for name, text in (("create", "make a new UI user"), ("ensure", "create or update a UI user (idempotent)")):
        u = usub.add_parser(name, help=text)
        u.add_argument("--username", required=True)
        u.add_argument("--role", required=True, choices=["viewer", "editor", "admin"])
        u.add_argument("--password-env", metavar="VAR", required=name == "ensure",
                       help="environment variable holding the password (default: asked on the terminal)")
    return parser


def _password(args):
    if args.password_env:
        if args.password_env not in os.environ:
            raise SystemExit("og-server: user %s: the environment variable %s is not set" % (
                args.username, args.password_env))
        return os.environ[args.password_env]
    first = getpass.getpass("password for %s: " % args.username)
    if first != getpass.getpass("again: "):
        raise SystemExit("og-server: the two passwords differ; nothing was changed")
    return first


def main(argv=None):
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        cfg = config_mod.load(args.config)
    except config_mod.ConfigError as exc:
        print("og-server: %s" % exc, file=sys.stderr)
        return 2
    app = create_app(config=None, config_path=args.config)
    if args.command == "db":
        print("schema upgraded" if init_db(app) else "schema up to date")
        return 0
    if args.command == "token":
        init_db(app)
        with app.app_context():
            if args.action == "create":
                token, secret = tokens.create(args.role, args.name or "%s-%s" % (args.role, secrets.token_hex(3)))
                print(secret)
                return 0
            value = os.environ.get(args.from_env, "")
            try:
                print(tokens.ensure(args.role, args.name, value))
            except ValueError as exc:
                print("og-server: token %s: %s (from $%s)" % (args.name, exc, args.from_env), file=sys.stderr)
                return 2
            return 0
    if args.command == "user":
        init_db(app)
        with app.app_context():
            try:
                password = _password(args)
                if args.action == "create":
                    users.create(args.username, password, args.role, created_by=("cli", "system", ""))
                    print("created")
                else:
                    print(users.ensure(args.username, password, args.role))
            except users.UserError as exc:
                print("og-server: user %s: %s" % (args.username, exc.message), file=sys.stderr)
                return 2
            except SystemExit as exc:
                print(exc.code, file=sys.stderr)
                return 2
        return 0
    init_db(app)
    return serve(app, cfg)


if __name__ == "__main__":
    sys.exit(main())

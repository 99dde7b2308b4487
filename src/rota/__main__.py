"""The ``rota`` command line."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print("usage: rota demo [--jobs N] [--workers N] [--db PATH]")
        print()
        print("commands:")
        print("  demo    run a supervised Store and workers over sample jobs on SQLite")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    if command == "demo":
        from rota.demo import main as demo_main

        return demo_main(rest)
    print(f"rota: unknown command {command!r} (known: demo)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""Argument types and the parser of the operator commands: a mistake is one `error:` line."""
from __future__ import annotations

import argparse
import sys


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def graph_id_type(text):
    """A graph id is a Bigtable table id: `*` or `?` are never a pattern over graphs."""
    from ..errors import ConfigError
    from ..launch.options import check_graph_id
    try:
        check_graph_id(text, option="--graph_id")
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--graph_id: ")) from None
    return text


def count_type(limit: float):
    """A positive count, at most `limit` (beyond any dataset: a typo such as 1e30)."""
    def parse(text):
        value = positive_float(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"{text} is beyond any dataset (at most {limit:.0e})")
        return value
    return parse


class OneLineParser(argparse.ArgumentParser):
    """Usage mistakes as one `error:` line (exit 2), not argparse's usage block."""

    def error(self, message):
        print(f"error: {self.prog}: {message} (--help lists the options)", file=sys.stderr)
        raise SystemExit(2)

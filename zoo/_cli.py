"""Argument parsing shared by the zoo's command-line tools."""
import argparse
import ast

__all__ = ['ModelKwargsAction']


class ModelKwargsAction(argparse.Action):
    """`--model-kwargs k=v [k=v ...]`, values parsed as Python literals when they are (else kept as strings)."""

    def __call__(self, parser, namespace, values, option_string=None):
        kwargs = getattr(namespace, self.dest) or {}
        for item in values:
            key, sep, value = item.partition('=')
            if not sep or not key:
                parser.error(f"{option_string} expects key=value pairs, got {item!r}")
            try:
                kwargs[key] = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                kwargs[key] = value
        setattr(namespace, self.dest, kwargs)

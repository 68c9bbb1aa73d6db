"""Option types of the command line that refuse bad numbers while parsing, before anything loads."""

from __future__ import annotations

import math

import click

from jflow.runtime.requests import MAX_SEED


class Seed(click.IntRange):
    name = "seed"

    def __init__(self):
        super().__init__(0, MAX_SEED)

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(f"{value!r} is not a seed: use a whole number from 0 to 2**63 - 1", param, ctx)


class FiniteFloat(click.FloatRange):
    """A FloatRange that also refuses nan and inf (nan passes FloatRange's comparisons)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class Threads(click.IntRange):
    """--threads: 1 to jflow.runtime.requests.max_threads() (4 per core), refused while parsing."""

    name = "threads"

    def __init__(self):
        super().__init__(1)

    def convert(self, value, param, ctx):
        from jflow.errors import InputError
        from jflow.runtime.requests import check_threads
        number = super().convert(value, param, ctx)
        try:
            check_threads(number)
        except InputError as exc:
            self.fail(str(exc), param, ctx)
        return number

"""Old spellings of the command line, kept working for a while with one line of notice on stderr.

The shapes now: inputs are positional, outputs are `--out` (`tiny --out DIR`, `onnx MODEL --out DIR`,
`build ARTIFACT`, `reference generate MODEL PROMPT`). The old ones (`tiny DIR`, `onnx --model MODEL`,
`build --out DIR`, `reference ... --model MODEL`) are parsed by hidden parameters named legacy_*.
"""

from __future__ import annotations

import click

LEGACY = "legacy_"


class Command(click.Command):
    """A command whose legacy_* parameters work but appear neither in its usage line nor in its help."""

    def collect_usage_pieces(self, ctx):
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if not (param.name or "").startswith(LEGACY):
                pieces.extend(param.get_usage_pieces(ctx))
        return pieces


def notice(old: str, new: str) -> None:
    click.echo(f"jflow-export: `{old}` is deprecated and will be removed; use `{new}`", err=True)


def _missing(ctx: click.Context, name: str):
    param = next(p for p in ctx.command.params if p.name == name)
    return click.MissingParameter(ctx=ctx, param=param)


def one_of(ctx: click.Context, name: str, legacy, old: str, new: str):
    """The value of parameter `name`, or of its old spelling `legacy` (with a notice); one is needed."""
    value = ctx.params[name]
    if legacy is not None:
        if value is not None:
            raise click.UsageError(f"`{old}` and `{new}` name the same folder; give it once, as `{new}`", ctx)
        notice(old, new)
        return legacy
    if value is None:
        raise _missing(ctx, name)
    return value


def shifted(ctx: click.Context, names: list[str], legacy, old: str, new: str) -> list:
    """The positional arguments `names`, the first of which was once the option `legacy`: given that way,
    click has put the others one place to the left, so they move back (with a notice)."""
    values = [ctx.params[n] for n in names]
    if legacy is not None:
        if values[-1] is not None:
            raise click.UsageError(f"got the model both as an argument and as --model; give it once, as `{new}`",
                                   ctx)
        notice(old, new)
        values = [legacy, *values[:-1]]
    for name, value in zip(names, values):
        if value is None:
            raise _missing(ctx, name)
    return values

"""The `avtok` entry point: one sub-command per stage, each in its own module, imported on use.

Importing a stage's module pulls in heavy libraries (torch, ray, av); loading lazily keeps
`avtok --help` and unrelated commands fast.
"""

from __future__ import annotations

import importlib

import click

# command name -> "module:attribute" under avtok.cli
COMMANDS: dict[str, str] = {
    "manifest": "manifest:manifest",
    "extract": "extract:extract",
    "tokenizer": "tokenizer:tokenizer",
    "tokenize": "tokenize:tokenize",
    "weights": "weights:weights",
    "train": "train:train",
    "generate": "generate:generate",
    "eval": "evaluate:evaluate",
    "demo": "demo:demo",
    "app": "app:app",
    "inspect": "inspect:inspect",
}

HELP: dict[str, str] = {
    "manifest": "Build a manifest (video_id, path, start_s, label, split) from videos or the VGGSound csv.",
    "extract": "Decode videos into 10 frames + a 10 s mel per clip, as WebDataset shards (Ray).",
    "tokenizer": "Fit or inspect tokenizers (patch k-means).",
    "tokenize": "Turn extracted shards into Parquet token shards with two tokenizers (Ray).",
    "weights": "Where to get the published tokenizer/vocoder weights; verify local copies.",
    "train": "Train the audio-visual masked transformer on token shards.",
    "generate": "Generate audio from an image (and other directions) with a trained checkpoint.",
    "eval": "Token-level and waveform metrics of a checkpoint on a token split.",
    "demo": "Run the whole chain on a generated mini data set, on CPU, in minutes.",
    "app": "Serve a Gradio page for a checkpoint: all four tasks, in the browser (needs avtok[app]).",
    "inspect": "Contact sheets, sample wavs and statistics of an extracted or token folder.",
}


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported only when invoked or asked for help."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        module = importlib.import_module(f"avtok.cli.{module_name}")
        return getattr(module, attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table above, so `avtok --help` imports nothing heavy.
        with formatter.section("Commands"):
            formatter.write_dl([(name, HELP[name]) for name in COMMANDS])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="avtok")
def cli() -> None:
    """avtok: audio-visual tokens at scale, and a masked generative transformer trained on them."""


if __name__ == "__main__":
    cli()

"""The `lensreport` command: argument parsing and user-facing errors only; commands/ does
the work.

Exit codes: 0 ok, 1 build failed, 2 usage or manifest error, 130 interrupted.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

import click

from ._version import __version__
from .errors import LensReportError, UsageError, first_line
from .lens.fit.settings import JacobianSettings, TrainSettings
from .text import visible

log = logging.getLogger("lensreport")


class _Formatter(logging.Formatter):
    """One line per record, under the one rule for text (text.py): a name or token in a
    message cannot break the line, reorder it or drive the terminal."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = {"WARNING": "warning: ", "ERROR": "error: "}.get(record.levelname, "")
        return prefix + visible(record.getMessage())


def _setup_logging(quiet: bool, verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    log.handlers[:] = [handler]
    log.propagate = False
    log.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if quiet or not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"


def _run(debug: bool, action: Callable[[], Any]) -> Any:
    """Run a command; turn every failure into one line and an exit code (no traceback)."""
    try:
        return action()
    except LensReportError as exc:
        if debug:
            traceback.print_exc()
        # Several problems are separate lines ("\n" only); each is one terminal line.
        for line in str(exc).split("\n"):
            click.echo(f"error: {visible(line)}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted: the previous site and the results cache are intact", err=True)
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence for users
        if debug:
            traceback.print_exc()
        click.echo(f"error: {type(exc).__name__}: {first_line(exc)} (run with --debug for "
                   "details)",
                   err=True)
        sys.exit(1)


def _common(function: Callable) -> Callable:
    function = click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")(function)
    function = click.option("-v", "--verbose", is_flag=True, help="Also debug messages.")(function)
    function = click.option("--debug", is_flag=True, help="Show tracebacks on errors.")(function)
    return function


def _build_options(function: Callable) -> Callable:
    decorators = [
        click.option("--site-dir", "-d", type=click.Path(path_type=Path),
                     help="Output folder (default: site/ next to the manifest)."),
        click.option("--clean", is_flag=True, help="Ignore cached results; recompute everything."),
        click.option("--strict", is_flag=True, help="Fail the build on any warning."),
        click.option("--only-model", "only_models", multiple=True, metavar="NAME",
                     help="Compute only this model (repeatable); others come from the cache."),
        click.option("--only-prompt", "only_prompts", multiple=True, metavar="NAME",
                     help="Compute only this prompt (repeatable); others come from the cache."),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


def _load(manifest_path: str):
    from .manifest import load_manifest

    return load_manifest(manifest_path)


def _report(summary: Any) -> None:
    computed = len(summary.computed)
    cached = len(summary.cached)
    models = ", ".join(summary.loaded_models) or "none"
    log.info("built %s in %.1f s: %d run(s) computed, %d from the cache; models loaded: %s",
             summary.site_dir, summary.seconds, computed, cached, models)
    for model, prompt, lens in summary.computed:
        log.debug("computed %s / %s (%s lens)", model, prompt, lens)
    if summary.warnings:
        log.info("%d warning(s)", len(summary.warnings))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lensreport")
def main() -> None:
    """Logit-lens reports for Hugging Face causal language models, as a static site.

    \b
    lensreport new                       write a starter prompts.yaml
    lensreport validate prompts.yaml     check it without loading weights
    lensreport build prompts.yaml        run the lens, write site/
    lensreport serve prompts.yaml        preview with live reload
    lensreport gh-deploy prompts.yaml    publish to the gh-pages branch
    """


def _shard(_context: Any, _parameter: Any, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        shard, shards = (int(part) for part in value.split("/"))
    except ValueError:
        shard = shards = 0
    if not 1 <= shard <= shards:
        raise click.BadParameter(f"{value!r}: write K/N with 1 <= K <= N, e.g. 2/3")
    return shard, shards


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@_build_options
@click.option("--shard", callback=_shard, metavar="K/N",
              help="Compute only share K of N of the runs into the results store; no site.")
@click.option("--no-compute", is_flag=True,
              help="Render from the results store only; fail listing missing runs.")
@_common
def build(manifest: str, site_dir: Path | None, clean: bool, strict: bool,
          only_models: tuple[str, ...], only_prompts: tuple[str, ...],
          shard: tuple[int, int] | None, no_compute: bool, quiet: bool,
          verbose: bool, debug: bool) -> None:
    """Run the logit lens for every (model, prompt) and write the static site.

    Unchanged runs come from the results cache (.lensreport-cache/ next to the manifest), so
    a rebuild only computes what the manifest change touches.

    \b
    Examples:
      lensreport build prompts.yaml
      lensreport build prompts.yaml --site-dir public --strict
      lensreport build prompts.yaml --only-prompt fox --clean
      lensreport build prompts.yaml --shard 2/3     (one of 3 machines; then:)
      lensreport build prompts.yaml --no-compute    (render the site from the store)
    """
    _setup_logging(quiet, verbose)

    def action() -> None:
        from .commands.build import compute_shard, run_build

        if shard and (no_compute or only_models or only_prompts or site_dir):
            raise UsageError("--shard computes into the results store only; it takes "
                                   "no --no-compute, --only-*, or --site-dir")
        loaded = _load(manifest)
        if shard:
            summary = compute_shard(loaded, *shard, clean=clean)
            log.info("shard %d/%d done in %.1f s: %d run(s) computed, %d already in the "
                     "store; models loaded: %s", *shard, summary.seconds,
                     len(summary.computed), len(summary.cached),
                     ", ".join(summary.loaded_models) or "none")
            return
        summary = run_build(loaded, site_dir, clean=clean, strict=strict,
                            only_models=only_models, only_prompts=only_prompts,
                            compute=not no_compute)
        _report(summary)

    _run(debug, action)


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@_common
def validate(manifest: str, quiet: bool, verbose: bool, debug: bool) -> None:
    """Check the manifest and that every model reference resolves, without loading weights.

    \b
    Example:
      lensreport validate prompts.yaml
    """
    _setup_logging(quiet, verbose)

    def action() -> None:
        from .commands.validate import validate as check

        loaded = _load(manifest)
        check(loaded)
        log.info("%s is valid: %d model(s) × %d prompt(s)", manifest, len(loaded.models),
                 len(loaded.prompts))

    _run(debug, action)


@main.command()
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", "-p", default=8000, show_default=True, type=int,
              help="Port (0 picks a free one).")
@click.option("--no-watch", is_flag=True, help="Do not rebuild on changes.")
@_common
def serve(manifest: str, host: str, port: int, no_watch: bool, quiet: bool, verbose: bool,
          debug: bool) -> None:
    """Build, serve the site on localhost, rebuild on changes, reload open pages.

    Watches the manifest, the built-in templates and the theme folder. The preview site is
    built into a temporary folder; your site/ is not touched.

    \b
    Example:
      lensreport serve prompts.yaml --port 8000
    """
    _setup_logging(quiet, verbose)

    def action() -> None:
        from .commands.serve import serve as run_server

        run_server(Path(manifest), host, port, watch=not no_watch)

    _run(debug, action)


@main.command("gh-deploy")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--remote", default="origin", show_default=True, help="Git remote to push to.")
@click.option("--branch", default="gh-pages", show_default=True, help="Branch to publish to.")
@click.option("--message", "-m", default=None, help="Commit message.")
@click.option("--no-push", is_flag=True, help="Commit to the branch but do not push.")
@_build_options
@_common
def gh_deploy(manifest: str, remote: str, branch: str, message: str | None, no_push: bool,
              site_dir: Path | None, clean: bool, strict: bool, only_models: tuple[str, ...],
              only_prompts: tuple[str, ...], quiet: bool, verbose: bool, debug: bool) -> None:
    """Build, then publish the site to the gh-pages branch (as `mkdocs gh-deploy`).

    Run it inside the git repository that GitHub Pages serves; enable Pages for the
    gh-pages branch in the repository settings.

    \b
    Example:
      lensreport gh-deploy prompts.yaml
    """
    _setup_logging(quiet, verbose)

    def action() -> None:
        from .commands.build import default_site_dir, run_build
        from .commands.gh_deploy import check_repository, deploy

        loaded = _load(manifest)
        # Paths first (relative to where the command runs), git and the remote next: a
        # missing remote must not cost a whole build.
        target = (site_dir or default_site_dir(loaded)).resolve()
        top = check_repository(loaded.root, remote, push=not no_push)
        summary = run_build(loaded, target, clean=clean, strict=strict,
                            only_models=only_models, only_prompts=only_prompts)
        _report(summary)
        deploy(target, top, remote=remote, branch=branch, message=message, push=not no_push)

    _run(debug, action)


_TRAIN = TrainSettings()  # the CLI's defaults are the settings' own


@main.command("train-lens")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--model", "model_name", required=True, help="The manifest's model to train for.")
@click.option("--corpus", required=True,
              help="A .txt file (documents separated by blank lines), a .jsonl file with a "
                   "'text' field, or a Hugging Face datasets id (when online).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Lens folder to write (default: lenses/MODEL next to the manifest).")
@click.option("--tokens", type=click.IntRange(1), default=_TRAIN.tokens, show_default=True,
              help="Training budget in tokens.")
@click.option("--seed", type=int, default=_TRAIN.seed, show_default=True)
@click.option("--context", type=click.IntRange(2), default=_TRAIN.context, show_default=True,
              help="Window length in tokens.")
@click.option("--tokens-per-step", type=click.IntRange(1), default=_TRAIN.tokens_per_step,
              show_default=True)
@click.option("--lr-scale", type=float, default=_TRAIN.lr_scale, show_default=True,
              help="Learning rate = lr-scale × (1 - momentum).")
@click.option("--held-out", "held_out", type=click.IntRange(0), default=_TRAIN.held_out_tokens,
              show_default=True, help="Tokens at the corpus's start kept out of training "
                                      "and measured before and after.")
@_common
def train_lens(manifest: str, model_name: str, corpus: str, out: Path | None, tokens: int,
               seed: int, context: int, tokens_per_step: int, lr_scale: float, held_out: int,
               quiet: bool, verbose: bool, debug: bool) -> None:
    """Train a tuned lens for one of the manifest's models (tuned-lens format).

    Zero-initialised translators, KL(final || lens) summed over layers, SGD with Nesterov
    momentum, linear decay over the token budget. Checkpoints in the output folder; run the
    same command again to resume. Then set `lens: {kinds: [logit, tuned], tuned: FOLDER}`.

    \b
    Example:
      lensreport train-lens prompts.yaml --model smollm2 --corpus corpus.txt --tokens 10000
    """
    _setup_logging(quiet, verbose)

    def action() -> None:
        from .commands.train_lens import print_report, train

        settings = TrainSettings(tokens=tokens, context=context, tokens_per_step=tokens_per_step,
                                 lr_scale=lr_scale, held_out_tokens=held_out, seed=seed)
        report, folder = train(_load(manifest), model_name, corpus, out, settings)
        print_report(report, folder)

    _run(debug, action)


_JACOBIAN = JacobianSettings()


@main.command("fit-lens")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--model", "model_name", required=True, help="The model's name in the manifest.")
@click.option("--kind", type=click.Choice(["jacobian", "tuned"]), required=True,
              help="jacobian: the Jacobian lens; tuned: the tuned lens (as train-lens).")
@click.option("--corpus", help="A .txt file (documents separated by blank lines), a .jsonl "
                                "file with a 'text' field, or a Hugging Face datasets id.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="File (jacobian; default lenses/MODEL/jacobian_lens.pt) or folder (tuned) "
                   "to write, next to the manifest.")
@click.option("--prompts", type=click.IntRange(1), default=_JACOBIAN.prompts, show_default=True,
              help="jacobian: corpus documents to fit on (each one prompt).")
@click.option("--context", type=click.IntRange(2), default=None,
              help=f"Tokens per prompt (jacobian: {_JACOBIAN.context}) or window (tuned: "
                   f"{_TRAIN.context}).")
@click.option("--skip-first", type=click.IntRange(0), default=_JACOBIAN.skip_first,
              show_default=True, help="jacobian: positions skipped at each prompt's start.")
@click.option("--dim-batch", type=click.IntRange(1), default=_JACOBIAN.dim_batch,
              show_default=True, help="jacobian: output dimensions per backward pass.")
@click.option("--checkpoint-every", type=click.IntRange(1), default=_JACOBIAN.checkpoint_every,
              show_default=True, help="jacobian: prompts between checkpoints (running sums).")
@click.option("--shard", callback=_shard, metavar="K/N",
              help="jacobian: fit prompts K-1, K-1+N, … and write their running sums.")
@click.option("--merge", "merge_parts", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="jacobian: add these shards' sums into one lens (repeatable).")
@click.option("--tokens", type=click.IntRange(1), default=_TRAIN.tokens, show_default=True,
              help="tuned: training budget in tokens.")
@_common
def fit_lens(manifest: str, model_name: str, kind: str, corpus: str | None, out: Path | None,
             prompts: int, context: int | None, skip_first: int, dim_batch: int,
             checkpoint_every: int, shard: tuple[int, int] | None, merge_parts: tuple[Path, ...], tokens: int,
             quiet: bool, verbose: bool, debug: bool) -> None:
    """Fit a lens for one of the manifest's models: a Jacobian lens (the reference format),
    or a tuned lens (`train-lens` with its defaults).

    The Jacobian lens averages, over the corpus's first --prompts documents (each its first
    --context tokens), the Jacobian of the last block's output with respect to each block's
    output (README, "The Jacobian lens"). Checkpoints next to --out; run the same command
    again to resume. On several machines: --shard K/N on each, then --merge.

    \b
    Examples:
      lensreport fit-lens prompts.yaml --model smol --kind jacobian --corpus corpus.txt
      lensreport fit-lens prompts.yaml --model smol --kind jacobian --corpus c.txt --shard 1/2
      lensreport fit-lens prompts.yaml --model smol --kind jacobian --merge a.pt --merge b.pt
    """
    _setup_logging(quiet, verbose)

    def tuned() -> None:
        from .commands.train_lens import print_report, train

        if merge_parts or shard:
            raise UsageError("--shard and --merge are for --kind jacobian")
        settings = TrainSettings(tokens=tokens, context=context or _TRAIN.context)
        report, folder = train(_load(manifest), model_name, need_corpus(), out, settings)
        print_report(report, folder)

    def jacobian() -> None:
        from .commands.fit_lens import fit_jacobian, merge_jacobian

        if merge_parts:
            if shard or corpus:
                raise UsageError("--merge takes the shard files only (no --corpus, no --shard)")
            merge_jacobian(_load(manifest), model_name, list(merge_parts), out)
            return
        fit_jacobian(_load(manifest), model_name, need_corpus(), out, JacobianSettings(
            prompts=prompts, context=context or _JACOBIAN.context, skip_first=skip_first,
            dim_batch=dim_batch, checkpoint_every=checkpoint_every, shard=shard or (1, 1)))

    def need_corpus() -> str:
        if not corpus:
            raise UsageError("--corpus is required (except with --merge)")
        return corpus

    _run(debug, {"jacobian": jacobian, "tuned": tuned}[kind])


@main.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@_common
def new(directory: Path, quiet: bool, verbose: bool, debug: bool) -> None:
    """Write a starter manifest (DIRECTORY/prompts.yaml, commented) to edit.

    \b
    Example:
      lensreport new my-report && lensreport build my-report/prompts.yaml
    """
    _setup_logging(quiet, verbose)

    def action() -> None:
        from .commands.new import write_starter

        path = write_starter(directory)
        log.info("wrote %s; edit it, then run: lensreport build %s", path, path)

    _run(debug, action)


if __name__ == "__main__":  # pragma: no cover
    main()

"""The ``bigembed`` command: one small click command per verb, no logic of its own.

Heavy modules (torch, zarr) are imported inside the commands so ``--help`` is
instant. A :class:`~bigembed.errors.BigembedError` becomes ``error: <message>`` on
stderr and exit code 1; a usage error (click's) becomes one line too,
``error: <message> (see `bigembed CMD --help`)``, with exit code 2.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import click

if TYPE_CHECKING:
    from tqdm import tqdm

from bigembed import __version__

# torch's intra-op threads (OpenMP) wait for work by spinning unless told otherwise: with another
# process busy on the same cores, an all-negatives epoch then took 41-54 s and 39-52 CPU seconds
# instead of 15-19 s and 12-14 (benchmarks/contention.py; alone, no slower). Set here, before
# any command imports torch; a value the user set is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from bigembed.config import STORAGE_DTYPES
from bigembed.errors import BigembedError


def _usage_error(ctx: click.Context, exc: click.UsageError, command: str) -> None:
    """Print a usage error as one line, ``error: <message> (see `bigembed CMD --help`)``, and exit 2."""
    message = " ".join(exc.format_message().split()).removesuffix(".")
    where = f"bigembed {command} --help" if command else "bigembed --help"
    click.echo(f"error: {message} (see `{where}`)", err=True)
    ctx.exit(exc.exit_code)


class BigembedGroup(click.Group):
    """The command group: usage errors and :class:`BigembedError` as one line (exit 2 and 1)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError:
            raise  # `bigembed` alone prints the help
        except click.UsageError as exc:  # an option of the group itself, e.g. `bigembed --bogus`
            _usage_error(ctx, exc, "")
            raise  # pragma: no cover - ctx.exit raised

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            command = ctx.invoked_subcommand or ""
            _usage_error(ctx, exc, command if command in self.commands else "")
        except BigembedError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo(INTERRUPTED.get(ctx.invoked_subcommand or "", "interrupted"), err=True)
            ctx.exit(130)


# What Ctrl-C leaves behind, by command (their outputs are written under temp names and renamed
# only when complete).
INTERRUPTED = {
    "train": "interrupted: the last committed checkpoint is intact; rerun to resume",
    "import": "interrupted: nothing was written (an existing DATA is unchanged)",
    "export": "interrupted: nothing was written (an existing output is unchanged)",
}


# Names for --delimiter's characters, and what a shell passes for a typed \t.
DELIMITERS = {"tab": "\t", "\\t": "\t", "comma": ",", "space": " ", "semicolon": ";", "pipe": "|"}


def _delimiter(value: str) -> str:
    """--delimiter's character: one character as given, or a name from :data:`DELIMITERS`."""
    char = DELIMITERS.get(value.lower(), value)
    if len(char) != 1:
        raise click.BadParameter(f"expected one character or one of {', '.join(DELIMITERS)}, got {value!r}",
                                 param_hint="--delimiter")
    return char


def _log(message: str) -> None:
    """An info line on stderr; ``-q`` hides it."""
    from bigembed import progress

    if progress.VERBOSITY >= 0:
        click.echo(message, err=True)


def _result(message: str) -> None:
    """A command's result line on stderr (what it wrote, what it did): printed even with ``-q``."""
    click.echo(message, err=True)


F = TypeVar("F", bound=Callable[..., Any])


def verbosity_options(command: F) -> F:
    """``-q/--quiet`` (errors and result lines only, no progress) and ``-v/--verbose`` (detail lines
    too, e.g. train's per-bucket lines): sets :data:`bigembed.progress.VERBOSITY` for the command."""

    @click.option("-v", "--verbose", is_flag=True, help="Also print detail lines (train: one per bucket).")
    @click.option("-q", "--quiet", is_flag=True, help="Print only errors and the result; no progress or info lines.")
    @functools.wraps(command)
    def run(*args: Any, quiet: bool, verbose: bool, **kwargs: Any) -> Any:
        from bigembed import progress

        if quiet and verbose:
            raise click.UsageError("give -q/--quiet or -v/--verbose, not both")
        progress.VERBOSITY = -1 if quiet else 1 if verbose else 0
        if quiet and "progress" in kwargs:
            kwargs["progress"] = False
        return command(*args, **kwargs)

    return cast(F, run)


_FREEZE_IMPORTS = False  # set by the console entry point, not when tests call the commands in-process


def _imports_done() -> None:
    """Move what the imports created (torch's tens of thousands of objects) out of the cyclic
    garbage collector's sight: collections during the command skip them, and so does the
    final collection at exit, which otherwise takes about 0.6 s of every torch command here.
    Only in the console entry point, where the process ends with the command."""
    if _FREEZE_IMPORTS:
        import gc

        gc.freeze()


def _counter(desc: str, unit: str, total: int | None, show: bool) -> AbstractContextManager[tqdm]:
    from bigembed.progress import progress_bar

    return progress_bar(total, desc, unit, show)


@click.group(cls=BigembedGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bigembed")
def cli() -> None:
    """Out-of-core graph embeddings, PyTorch-BigGraph style.

    Typical use: bigembed import -> bigembed train -> bigembed eval / export / report;
    after training, bigembed neighbors / predict (or bigembed.open_run in Python).
    """


@cli.command("import")
@click.argument("edges", nargs=-1, type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="DATA directory to create.")
@click.option("-p", "--partitions", type=click.IntRange(min=1), help="Node partitions P (default 1).")
@click.option("--split", "splits", multiple=True, metavar="NAME=FILE",
              help="Another split sharing the dictionary, e.g. --split test=test.tsv (repeatable).")
@click.option("--delimiter", default="\t", show_default="tab", callback=lambda _c, _p, v: _delimiter(v),
              help="Field separator: one character or tab, comma, space, semicolon, pipe (use ',' for CSV).")
@click.option("--columns", default="lhs,rel,rhs", show_default=True,
              help="Column roles in order: lhs, rel, rhs, weight (float per edge), _ to skip; 'lhs,rhs': one relation.")
@click.option("--ids", type=click.Choice(["string", "int"]), default="string", show_default=True,
              help="'int': node ids are dense integers 0..N-1 and no dictionary is built.")
@click.option("--header/--no-header", default=None,
              help="Line 1 of every file is a header to skip (--header) or an edge (--no-header). "
                   "Unsaid, a line 1 of column names only (lhs, rhs, source, ...) is refused.")
@click.option("--comment", default="#", show_default=True,
              help="Lines starting with this are skipped (and counted); '' to read them as edges.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the partition assignment.")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="Config whose [entities.NAME] and [relations.NAME] lhs/rhs give the entity types "
                   "(the schema); without one every node is of type 'node'.")
@click.option("--memory", metavar="SIZE",
              help="Pick --partitions so that training at --dim fits SIZE (e.g. 8G), instead of -p; "
                   "the import itself also stays within SIZE (default: half of the memory available).")
@click.option("--dim", "memory_dim", type=int, default=100, show_default=True,
              help="Embedding dimension --memory plans for.")
@click.option("--storage-dtype", "memory_dtype", type=click.Choice(STORAGE_DTYPES),
              default="float32", show_default=True,
              help="training.storage_dtype --memory plans for (half precision: about twice the rows).")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--progress/--no-progress", default=True, help="Show progress bars (on a terminal).")
@verbosity_options
def import_cmd(edges: tuple[Path, ...], out: Path, partitions: int | None, splits: tuple[str, ...],
               delimiter: str, columns: str, ids: str, header: bool | None, comment: str, seed: int,
               config_file: Path | None, memory: str | None, memory_dim: int, memory_dtype: str, overwrite: bool,
               progress: bool) -> None:
    """Import edge files (TSV/CSV, optionally gzip/xz/bzip2, or Parquet) into a partitioned DATA directory.

    EDGES are the training edges ('-' reads standard input, so another program can pipe
    edges in); --split NAME=FILE adds evaluation splits. Each file is read once; the
    dictionary of node names is kept within --memory (default: half of the memory
    available), spilling to disk beside OUT when it does not fit. With
    --config, each relation's lhs and rhs nodes get the entity types its
    [relations.NAME] declares: the same id under two types is two nodes.
    """
    from bigembed.config import load_config
    from bigembed.partitioner import ImportSpec, Source
    from bigembed.partitioner.blocks import is_stdin
    from bigembed.partitioner.plan import Schema
    from bigembed.partitioner.reader import ColumnSpec

    sources = [Source("train", p) for p in edges]
    for item in splits:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            raise click.BadParameter(f"expected NAME=FILE, got {item!r}", param_hint="--split")
        sources.append(Source(name, Path(file)))
    if not sources:
        raise click.UsageError("give at least one edge file (EDGES or --split NAME=FILE)")
    from bigembed.scheduler.memory import human, parse_bytes

    if memory is not None and partitions is not None:
        raise click.UsageError("give --memory or -p/--partitions, not both")
    budget = None if memory is None else parse_bytes(memory)
    schema = None if config_file is None else Schema.from_config(load_config(config_file), str(config_file))
    spec = ImportSpec(sources=sources, num_partitions=partitions or 1, columns=ColumnSpec.parse(columns),
                      delimiter=delimiter, ids=ids, seed=seed, schema=schema, memory=budget, memory_dim=memory_dim,
                      memory_dtype=memory_dtype, header=header, comment=comment)
    if out.exists() and not overwrite:
        raise BigembedError(f"{out}: already exists (pass --overwrite to replace it)")
    if sum(is_stdin(s.path) for s in sources) > 1:
        raise click.UsageError("standard input (-) can be read for one source only")
    from bigembed.partitioner.engine import import_budget, import_data

    total_bytes = sum(s.path.stat().st_size for s in sources if not is_stdin(s.path) and s.path.is_file())
    _log(f"import memory {human(import_budget(spec))}" + ("" if budget is not None else
                                                         " (half of what is available; set it with --memory)"))
    with ExitStack() as stack:
        reading = stack.enter_context(_counter("reading", "B", total_bytes or None, progress))

        def edge_progress(total: int) -> Callable[[int], object]:
            reading.close()
            return stack.enter_context(_counter("writing buckets", "edge", total, progress)).update

        def log(message: str) -> None:  # above the progress bar, which is then drawn again below
            import sys

            from tqdm import tqdm as bars

            from bigembed import progress as progress_module

            if progress_module.VERBOSITY >= 0:
                bars.write(message, file=sys.stderr)

        _manifest, stats = import_data(spec, out, overwrite=overwrite, progress=reading.update,
                                       edge_progress=edge_progress, log=log)
    from bigembed.progress import plural

    if budget is not None:
        _result(f"memory budget {human(budget)} at dim {memory_dim} ({memory_dtype}): "
             f"{plural(stats.num_partitions, 'partition')}")
    _result(f"imported: {stats.summary(ids, spec.type_names)}")
    if stats.spilled_bytes:
        how = "kept the edges in a database file" if stats.on_disk else "spilled"
        _log(f"the dictionary {how} ({human(stats.spilled_bytes)} on disk) to stay within {human(stats.memory_limit)}")
    _result(f"wrote {out}")


def _parse_sets(sets: tuple[str, ...]) -> dict[str, str]:
    from bigembed.config import parse_set_option

    return dict(parse_set_option(s) for s in sets)


@cli.command()
@click.argument("data", type=click.Path(path_type=Path))
@click.option("-o", "--output", "run", required=True, type=click.Path(path_type=Path),
              help="RUN directory; an existing one is resumed.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="TOML or JSON config file.")
@click.option("--dim", type=int, help="model.dim")
@click.option("--epochs", type=int, help="training.epochs")
@click.option("--lr", type=float, help="training.lr")
@click.option("--batch-size", type=int, help="training.batch_size")
@click.option("--negatives", type=int, help="training.negatives (uniform, per chunk)")
@click.option("--workers", type=int, help="training.workers (0: one per core)")
@click.option("--seed", type=int, help="training.seed")
@click.option("--deterministic", is_flag=True, default=None, help="training.deterministic=true")
@click.option("--device", help="training.device: cpu (the default), cuda or cuda:N.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Any config field, e.g. model.margin=0.2.")
@click.option("--override", is_flag=True, help="Resume even though settings differ from the saved run's.")
@click.option("--memory", metavar="SIZE",
              help="Memory budget, e.g. 8G: sets training.buffer_partitions (and the beta order) to fit it.")
@click.option("--progress/--no-progress", default=True,
              help="Show progress: a bar on a terminal, else a plain line every --log-every seconds.")
@click.option("--log-every", type=click.FloatRange(min=0), default=60.0, show_default=True, metavar="SECONDS",
              help="Off a terminal (nohup, a batch job): seconds between progress lines (0: none).")
@verbosity_options
def train(data: Path, run: Path, config_file: Path | None, dim: int | None, epochs: int | None, lr: float | None,
          batch_size: int | None, negatives: int | None, workers: int | None, seed: int | None,
          deterministic: bool | None, device: str | None, sets: tuple[str, ...], override: bool,
          memory: str | None, progress: bool, log_every: float) -> None:
    """Train embeddings for DATA into RUN (or resume RUN where it stopped).

    See `bigembed config-help` for every config key.
    """
    from bigembed import progress as progress_module
    from bigembed.training import train as run_training

    _imports_done()
    progress_module.PLAIN_EVERY = log_every

    overrides: dict[str, Any] = _parse_sets(sets)
    flags = {"model.dim": dim, "training.epochs": epochs, "training.lr": lr, "training.batch_size": batch_size,
             "training.negatives": negatives, "training.workers": workers, "training.seed": seed,
             "training.deterministic": deterministic, "training.device": device}
    overrides.update({k: v for k, v in flags.items() if v is not None})
    from bigembed.scheduler.memory import parse_bytes

    budget = None if memory is None else parse_bytes(memory)
    result = run_training(data, run, config_file, overrides, override, log=_log, show_progress=progress,
                          memory=budget)
    if result.stopped:
        raise SystemExit(130)
    if not result.quiet:
        from bigembed.progress import plural

        _result(f"done: v{result.version}, {plural(result.epochs_done, 'epoch')} trained")


@cli.command("eval")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--split", default="test", show_default=True, help="Which imported split to rank.")
@click.option("--protocol", type=click.Choice(["filtered", "raw", "sampled"]), default="filtered",
              show_default=True,
              help="filtered/raw: rank against every node (filtered drops other known true edges); "
                   "sampled: against --negatives random nodes, as PyTorch-BigGraph does.")
@click.option("--negatives", default=1000, show_default=True, type=click.IntRange(min=1),
              help="Sampled negatives per edge and side (--protocol sampled).")
@click.option("--max-edges", type=click.IntRange(min=1),
              help="--protocol sampled: rank a seeded random sample of about this many of the split's edges.")
@click.option("--per-relation", is_flag=True, help="Also report each relation's metrics.")
@click.option("--version", "which", default="last", show_default=True,
              help="Checkpoint: last, best (best on the validation split) or a version such as v3.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the sampled negatives.")
@click.option("--json", "json_out", type=click.Path(path_type=Path),
              help="Also write the metrics here as JSON ('-' prints JSON instead of text).")
@click.option("--progress/--no-progress", default=True)
@verbosity_options
def eval_cmd(run: Path, data: Path, split: str, protocol: str, negatives: int, max_edges: int | None,
             per_relation: bool, which: str, seed: int, json_out: Path | None, progress: bool) -> None:
    """Link-prediction metrics (MRR, Hits@1/3/10, mean rank) of RUN's last checkpoint on a split of DATA."""
    from bigembed.evaluation import evaluate_full, evaluate_sampled
    from bigembed.evaluation.report import format_metrics, opened_checkpoint
    from bigembed.storage.atomic import atomic_write_json

    _imports_done()

    with opened_checkpoint(run, data, which) as (manifest, dm, config):  # pinned while it is read
        dm.require_split(split)
        if protocol == "sampled":
            total = dm.num_edges(split) if max_edges is None else min(max_edges, dm.num_edges(split))
            with _counter(f"eval {split}", "edge", total, progress) as bar:
                metrics = evaluate_sampled(run, manifest, dm, config, split, negatives, seed, bar.update, max_edges)
        else:
            if max_edges is not None:
                raise click.UsageError("--max-edges goes with --protocol sampled")
            total = 2 * dm.num_edges(split) * dm.num_partitions
            with _counter(f"eval {split}", "query", total, progress) as bar:
                metrics = evaluate_full(run, manifest, dm, config, split, protocol == "filtered", per_relation,
                                        bar.update)
    if json_out is not None and str(json_out) == "-":
        click.echo(json.dumps(metrics, indent=2))
        return
    click.echo(format_metrics(metrics))
    if json_out is not None:
        atomic_write_json(json_out, metrics)


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path), help="Folder to create.")
@click.option("--format", "fmt", type=click.Choice(["tsv", "npy", "h5", "parquet", "faiss", "projector"]),
              default="tsv", show_default=True,
              help="faiss: an index for `bigembed neighbors --index` (pip install 'bigembed[faiss]'); "
                   "projector: a sample for TensorBoard's Embedding Projector.")
@click.option("--faiss-index", "faiss_factory", default="Flat", show_default=True, metavar="FACTORY",
              help="--format faiss: FAISS's index factory string; Flat is exact, e.g. IVF4096,PQ32 is smaller.")
@click.option("--sample", type=click.IntRange(min=1), metavar="N",
              help="--format projector: a uniform random sample of N nodes (default 10,000; all if fewer).")
@click.option("--seed", type=int, help="--format projector: seed of the sample (default 0).")
@click.option("--data", "data", type=click.Path(path_type=Path),
              help="DATA directory, if it moved since training (default: the one RUN was trained on).")
@click.option("--version", "which", default="last", show_default=True,
              help="Checkpoint: last, best (best on the validation split) or a version such as v3.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@click.option("--progress/--no-progress", default=True)
@verbosity_options
def export(run: Path, out: Path, fmt: str, faiss_factory: str, sample: int | None, seed: int | None,
           data: Path | None, which: str, overwrite: bool, progress: bool) -> None:
    """Export RUN's embeddings (last checkpoint by default), streaming one partition at a time."""
    if fmt != "faiss" and faiss_factory != "Flat":
        raise click.UsageError("--faiss-index goes with --format faiss")
    if fmt != "projector" and (sample is not None or seed is not None):
        raise click.UsageError("--sample and --seed go with --format projector")
    from bigembed.evaluation.report import opened_checkpoint
    from bigembed.export import export_run
    from bigembed.trainer import Model

    _imports_done()

    with opened_checkpoint(run, data, which) as (manifest, dm, config):  # pinned while it is read
        layout: list[dict[str, object]] = [
            {"index": i, "name": s.name, "operator": s.operator_name, "offset": s.offset,
             "shape": list(s.shape) if s.shape else None,
             "lhs": dm.type_names[s.lhs_type], "rhs": dm.type_names[s.rhs_type]}
            for i, s in enumerate(Model.for_data(config, dm).specs)
        ]
        with _counter(f"export {fmt}", "row", dm.num_entities, progress) as bar:
            rows = export_run(run, manifest, dm, out, fmt, config.model.dim, overwrite, bar.update, layout,
                              sample=10_000 if sample is None else sample, seed=seed or 0,
                              comparator=config.model.comparator, faiss_factory=faiss_factory)
    of = f" of {dm.num_entities}" if rows < dm.num_entities else ""
    _result(f"wrote {out} ({rows}{of} rows, v{manifest.version})")


def _query_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Options shared by the query commands (neighbors, predict)."""
    for option in reversed([
        click.option("-k", "k", default=10, show_default=True, type=click.IntRange(min=1), help="Answers per query."),
        click.option("--from-file", "from_file", type=click.File("r"),
                     help="Also read query names from this file, one per line ('-': standard input)."),
        click.option("--format", "fmt", type=click.Choice(["tsv", "json"]), default="tsv", show_default=True,
                     help="tsv: a header, then a line per answer; json: a list of queries with their answers."),
        click.option("--data", type=click.Path(path_type=Path),
                     help="DATA directory, if it moved since training (default: the one RUN was trained on)."),
        click.option("--version", "which", default="last", show_default=True,
                     help="Checkpoint: last, best or a version such as v3."),
        click.option("--memory", metavar="SIZE",
                     help="Memory for partitions kept between queries and the score blocks, e.g. 4G "
                          "(default: half of what is available); a larger table is streamed."),
    ]):
        f = option(f)
    return f


def _query_names(names: tuple[str, ...], from_file: Any) -> list[str]:
    out = list(names)
    if from_file is not None:
        out += [line.rstrip("\r\n") for line in from_file if line.strip()]
    if not out:
        raise click.UsageError("no query: give NAME arguments or --from-file")
    return out


def _print_answers(queries: list[dict[str, Any]], answers: list[Any], fmt: str) -> None:
    """One TSV line per answer under a header (the query's fields, rank, name, score, type), or JSON."""
    if fmt == "json":
        click.echo(json.dumps([{**q, "answers": [{"rank": i + 1, "name": m.name, "score": m.score, "type": m.type}
                                                  for i, m in enumerate(a)]}
                               for q, a in zip(queries, answers, strict=True)], indent=2))
        return
    keys = list(queries[0])
    lines = ["\t".join([*keys, "rank", "name", "score", "type"])]
    for q, a in zip(queries, answers, strict=True):
        lines += ["\t".join([*(str(q[key]) for key in keys), str(i + 1), m.name, f"{m.score:.6g}", m.type])
                  for i, m in enumerate(a)]
    click.echo("\n".join(lines))


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("names", nargs=-1)
@click.option("--type", "entity_type", help="Entity type of the names (needed where a name has several).")
@click.option("--index", "index", type=click.Path(path_type=Path),
              help="Search this `bigembed export --format faiss` folder instead of streaming the table.")
@click.option("--search", metavar="PARAMS",
              help="With --index: FAISS search parameters, e.g. nprobe=32 for an IVF index (more: slower, nearer).")
@_query_options
def neighbors(run: Path, names: tuple[str, ...], entity_type: str | None, index: Path | None, search: str | None,
              k: int, from_file: Any, fmt: str, data: Path | None, which: str, memory: str | None) -> None:
    """The K nodes nearest to each NAME by the model's comparator, best first.

    \b
      bigembed neighbors RUN 02084071 -k 5
      bigembed neighbors RUN --from-file queries.txt --format json
      bigembed export RUN -o IDX --format faiss && bigembed neighbors RUN 02084071 --index IDX
    """
    from bigembed.api import open_run

    queries = _query_names(names, from_file)
    _imports_done()
    with open_run(run, data, which, memory) as opened:
        if search and index is None:
            raise click.UsageError("--search goes with --index")
        answers = opened.neighbors(queries, k, entity_type, index, search)
    _print_answers([{"query": q} for q in queries], answers, fmt)


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("names", nargs=-1)
@click.option("-r", "--relation", required=True, help="Relation name (or its index).")
@click.option("--heads", "predict_heads", is_flag=True,
              help="NAMES are tails: predict the heads of (?, RELATION, NAME) instead of the tails of (NAME, "
                   "RELATION, ?).")
@click.option("--unfiltered", is_flag=True, help="Keep answers the DATA already has (any split) in the list.")
@_query_options
def predict(run: Path, names: tuple[str, ...], relation: str, predict_heads: bool, unfiltered: bool, k: int,
            from_file: Any, fmt: str, data: Path | None, which: str, memory: str | None) -> None:
    """The K best tails of (NAME, RELATION, ?) for each NAME, or with --heads the K best heads
    of (?, RELATION, NAME), best first. Answers the DATA already has are left out unless
    --unfiltered.

    \b
      bigembed predict RUN 02084071 -r _hypernym -k 5
      bigembed predict RUN 02084071 -r _hypernym --heads --format json
    """
    from bigembed.api import open_run

    queries = _query_names(names, from_file)
    _imports_done()
    with open_run(run, data, which, memory) as opened:
        rel: str | int = relation
        if relation not in opened.relations and relation.isdigit():
            rel = int(relation)
        if predict_heads:
            answers = opened.predict_heads(rel, queries, k, not unfiltered)
            rows = [{"tail": q, "relation": relation} for q in queries]
        else:
            answers = opened.predict_tails(queries, rel, k, not unfiltered)
            rows = [{"head": q, "relation": relation} for q in queries]
    _print_answers(rows, answers, fmt)


@cli.command()
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--data", "data", type=click.Path(path_type=Path),
              help="DATA directory, if it moved since training (default: the one RUN was trained on).")
@click.option("-o", "--output", "out", type=click.Path(path_type=Path),
              help="HTML file to write (default: RUN/report.html).")
def report(run: Path, data: Path | None, out: Path | None) -> None:
    """Write a training report of RUN: one self-contained HTML page, and a summary on standard output.

    The page shows loss, speed and time split by epoch and bucket, validation by epoch,
    partition loads, peak memory, the config, and the DATA's nodes, relations and degree
    distribution (without DATA, the rest still renders). Plots need matplotlib:
    pip install 'bigembed[report]'.
    """
    from bigembed.report import build_report, summary_lines, write_report

    built = build_report(run, data)
    for damaged in built.stats.damaged[:5]:
        _log(f"warning: skipped damaged line {damaged}")
    if len(built.stats.damaged) > 5:
        _log(f"warning: ... and {len(built.stats.damaged) - 5} more damaged lines in {built.stats.path}")
    html = out if out is not None else run / "report.html"
    lines = summary_lines(built, html)
    write_report(built, html, lines)
    for line in lines:
        click.echo(line)


@cli.command()
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(path: Path, as_json: bool) -> None:
    """Describe a DATA or RUN directory."""
    from bigembed.describe import describe

    facts = describe(path)
    if as_json:
        click.echo(json.dumps(facts, indent=2))
    else:
        for key, value in facts.items():
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            click.echo(f"{key}: {value}")


@cli.command()
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path),
              help="Folder for train.tsv, valid.tsv, test.tsv; '-' writes the train edges to standard output.")
@click.option("--holdout", type=click.Path(path_type=Path),
              help="With -o -: folder for valid.tsv and test.tsv (without it they are not written at all).")
@click.option("--nodes", default=10000, show_default=True, type=int)
@click.option("--edges", default=100000, show_default=True, type=int)
@click.option("--relations", default=3, show_default=True, type=int)
@click.option("--communities", default=20, show_default=True, type=int)
@click.option("--exponent", default=1.0, show_default=True, type=float, help="Power-law exponent of popularity.")
@click.option("--noise", default=0.05, show_default=True, type=float, help="Fraction of random rhs.")
@click.option("--ids", type=click.Choice(["string", "int"]), default="string", show_default=True,
              help="'string': lines n<id> TAB r<rel> TAB n<id>; 'int': <id> TAB <rel> TAB <id>, ids 0..N-1.")
@click.option("--seed", default=0, show_default=True, type=int, help="Same seed and options, same bytes.")
@click.option("--progress/--no-progress", default=True, help="Progress bar on standard error (on a terminal).")
@verbosity_options
def generate(out: Path, holdout: Path | None, nodes: int, edges: int, relations: int, communities: int,
             exponent: float, noise: float, ids: str, seed: int, progress: bool) -> None:
    """Generate a synthetic graph with planted communities and power-law degrees.

    Each edge goes to valid.tsv or test.tsv with probability 5%, otherwise to train.tsv.
    With -o -, the train edges stream to standard output, so a graph can be imported
    without a copy on disk; valid.tsv and test.tsv then go to --holdout DIR, and
    without --holdout they are not written at all:

    \b
      bigembed generate -o - --holdout held --nodes 4000000 --edges 100000000 \\
        | bigembed import - -o DATA --split valid=held/valid.tsv --split test=held/test.tsv

    Progress and messages go to standard error only. If the reader stops early (a
    closed pipe), generate stops quietly with exit status 1.
    """
    import sys

    from bigembed.generator import GraphSpec, write_edges, write_graph

    spec = GraphSpec(nodes=nodes, edges=edges, relations=relations, communities=communities,
                     exponent=exponent, noise=noise, seed=seed, int_ids=ids == "int")
    spec.validate()
    to_stdout = str(out) == "-"
    if holdout is not None and not to_stdout:
        raise click.UsageError("--holdout goes with -o - (a folder output gets valid.tsv and test.tsv itself)")
    if not to_stdout:
        with _counter("generating", "edge", edges, progress) as bar:
            paths = write_graph(spec, out, progress=bar.update)
        _result("wrote " + ", ".join(str(p) for p in paths.values()))
        return
    stdout = sys.stdout.buffer
    try:  # a 1 MiB pipe buffer (Linux): the default 64 KiB costs a context switch each
        import fcntl

        fcntl.fcntl(stdout.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    except (ImportError, AttributeError, OSError, ValueError):
        pass  # not a pipe, not Linux, or no file descriptor (tests)
    held: dict[str, Any] = {}
    try:
        if holdout is not None:
            holdout.mkdir(parents=True, exist_ok=True)
            held = {name: open(holdout / f"{name}.tsv", "wb") for name in ("valid", "test")}
        with _counter("generating", "edge", edges, progress) as bar:
            write_edges(spec, stdout, held.get("valid"), held.get("test"), progress=bar.update)
        stdout.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): stop as quietly as a tool killed by SIGPIPE, and keep
        # the interpreter's final flush of the dead pipe from printing an error.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError, AttributeError):
            pass
        raise click.exceptions.Exit(1) from None
    finally:
        for handle in held.values():
            handle.close()
    _result("wrote the train edges to standard output, " + (f"{holdout / 'valid.tsv'} and {holdout / 'test.tsv'}"
                                                         if holdout else "no valid/test (no --holdout)"))


@cli.command("config-help")
def config_help() -> None:
    """Every config key with its type, default and meaning."""
    from bigembed.config import schema_help

    click.echo(schema_help())


@cli.command()
@click.option("-o", "--output", "out", default=Path("bigembed-demo"), show_default=True,
              type=click.Path(path_type=Path), help="Folder for the demo's graph, DATA, RUN and export.")
@click.option("--progress/--no-progress", default=True)
@verbosity_options
def demo(out: Path, progress: bool) -> None:
    """Run the whole path on a small built-in synthetic graph: generate, import, train, eval, export."""
    from bigembed.demo import run_demo

    _imports_done()
    metrics = run_demo(out, log=_log, show_progress=progress)
    click.echo(f"demo: test MRR {metrics['mrr']:.3f} (a random embedding scores about "
               f"{metrics['random_mrr']:.3f}); files in {out}")


# Commands after which the process may end at once: everything they write is closed and synced
# before they return (the checkpoint commit, the export's rename, stats.jsonl), and no library
# they use cleans up at exit. Tearing down torch's modules took about 0.3 s of every such command.
FAST_EXIT = ("train", "eval", "export")


def main() -> None:  # console-script entry point
    global _FREEZE_IMPORTS
    _FREEZE_IMPORTS = True
    import sys

    try:
        cli(prog_name="bigembed")
    except SystemExit as done:
        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        if command in FAST_EXIT and isinstance(done.code, int | None):
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(done.code or 0)
        raise


if __name__ == "__main__":
    main()

"""Scale curve toward a billion edges: generate, import, one epoch, sampled eval, npy export.

For each size EDGES:NODES (suffixes k, M, G allowed, e.g. 100M:10M) it runs, in
WORK/<size>/, each command as a whole measured child (wall time, peak RSS of its largest
process, disk use of what it wrote and the peak disk use of the size's folder while it ran):

  bigembed generate -o graph --nodes N --edges M --no-progress
  bigembed import graph/train.tsv --split test=graph/test.tsv -o data --memory 16G --dim 64 --no-progress
  bigembed train data -o run --dim 64 --epochs 1 --memory 16G --no-progress
  bigembed eval run data --split test --protocol sampled --negatives 1000 --json metrics.json --no-progress
  bigembed eval ... --version v0   (the untrained initial embedding, where the run has a v0; else the
                                    random-ranking formula H(K+1)/(K+1) is printed)
  bigembed export run --data data -o out --format npy --no-progress

With --pipe the text graph never lands on disk whole: this script's own generator (the
same edges as `bigembed generate`, through bigembed.generator.write_edges) writes train
to standard output and test/valid to files, closing them before standard output so the
importer finds test complete when train ends:

  python benchmarks/billion.py --emit-train N M graph | bigembed import - --split test=graph/test.tsv ...

Each size's folder is deleted before the next size (--keep keeps the last). A failed or
timed-out command is recorded with its last error line and the steps that need it are
skipped. Results go to WORK/results.json and a markdown table is printed.

Usage:
  python benchmarks/billion.py [--sizes 10M:1M 100M:10M 200M:40M] [--pipe] [--memory 16G] [--dim 64]
      [--negatives 1000] [--work /tmp/billion] [--timeout 3600] [--budget-minutes 60] [--keep]
      [--no-untrained | --untrained-max-edges 20M]
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from measure import PBG_STYLE_SETS, epoch_seconds  # noqa: E402
from timed import du_bytes, run_timed  # noqa: E402

PY = sys.executable
BIGEMBED = [PY, "-m", "bigembed.cli.main"]
# `bigembed generate`'s defaults, so --emit-train writes the same edges
GEN_DEFAULTS = dict(relations=3, communities=20, exponent=1.0, noise=0.05, seed=0)


def count(text: str) -> int:
    text = text.strip()
    mult = {"k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "B": 10**9}.get(text[-1:], 1)
    return int(float(text[:-1] if mult > 1 else text) * mult)


def emit_train(nodes: int, edges: int, graph: Path) -> None:
    """train edges to stdout, valid and test to graph/*.tsv (closed before stdout is)."""
    from bigembed.generator import GraphSpec, write_edges

    graph.mkdir(parents=True, exist_ok=True)
    spec = GraphSpec(nodes=nodes, edges=edges, **GEN_DEFAULTS)
    out = sys.stdout.buffer
    with open(graph / "valid.tsv", "wb") as valid, open(graph / "test.tsv", "wb") as test:
        write_edges(spec, out, valid, test)
    out.flush()
    out.close()


class DiskPeak:
    """Samples the disk use of a folder every ``every`` seconds while a command runs."""

    def __init__(self, path: Path, every: float = 3.0) -> None:
        self.path, self.every, self.peak = path, every, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, du_bytes(self.path))
            except OSError:  # a file renamed or removed while listed
                pass
            self._stop.wait(self.every)

    def __enter__(self) -> DiskPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, du_bytes(self.path))


def random_mrr(negatives: int) -> float:
    """Expected MRR of random scores ranked against ``negatives`` candidates: H(K+1)/(K+1)."""
    return sum(1.0 / i for i in range(1, negatives + 2)) / (negatives + 1)


def run_size(edges: int, nodes: int, args: argparse.Namespace, log: Path) -> dict:
    tag = f"{edges}e_{nodes}n"
    work = args.work / tag
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    graph, data, run, out = work / "graph", work / "data", work / "run", work / "out"
    mem, dim = args.memory, str(args.dim)
    res: dict = {"edges": edges, "nodes": nodes, "pipe": args.pipe, "steps": {}}

    def step(name: str, cmd: list[str] | str, wrote: Path | None, needs: tuple[str, ...] = ()) -> dict | None:
        bad = [n for n in needs if res["steps"].get(n, {}).get("rc") != 0]
        if bad:
            res["steps"][name] = {"cmd": cmd if isinstance(cmd, str) else shlex.join(cmd), "rc": None,
                                  "error": f"skipped: {', '.join(bad)} did not succeed"}
            print(f"  {name}: skipped", flush=True)
            return None
        if args.deadline and time.time() > args.deadline:
            res["steps"][name] = {"cmd": cmd if isinstance(cmd, str) else shlex.join(cmd), "rc": None,
                                  "error": "skipped: time budget spent"}
            print(f"  {name}: skipped (time budget spent)", flush=True)
            return None
        with DiskPeak(work) as disk:
            t = run_timed(cmd, log=log, timeout=args.timeout)
        row = {**t.as_dict(), "disk_peak_mib": disk.peak / 2**20,
               "wrote_mib": du_bytes(wrote) / 2**20 if wrote else None}
        res["steps"][name] = row
        status = "ok" if t.ok else f"FAILED: {t.error}"
        print(f"  {name}: {t.wall_s:8.1f} s  peak RSS {t.rss_mib or 0:8.0f} MiB  wrote "
              f"{row['wrote_mib'] or 0:8.0f} MiB  folder peak {row['disk_peak_mib']:8.0f} MiB  {status}", flush=True)
        return row

    print(f"{edges:,} edges, {nodes:,} nodes ({'piped' if args.pipe else 'text file'})", flush=True)
    imp = [*BIGEMBED, "import", "--split", f"test={graph / 'test.tsv'}", "-o", str(data), "--memory", mem,
           "--dim", dim, "--no-progress"]
    head, tail = imp[:len(BIGEMBED) + 1], imp[len(BIGEMBED) + 1:]  # ... import | the options
    if args.pipe:
        gen = [PY, str(Path(__file__).resolve()), "--emit-train", str(nodes), str(edges), str(graph)]
        step("generate|import", f"{shlex.join(gen)} | {shlex.join(head)} - {shlex.join(tail)}", data)
        imported = "generate|import"
    else:
        step("generate", [*BIGEMBED, "generate", "-o", str(graph), "--nodes", str(nodes), "--edges", str(edges),
                          "--no-progress"], graph)
        step("import", [*head, str(graph / "train.tsv"), *tail], data, ("generate",))
        imported = "import"
    res["graph_mib"] = du_bytes(graph) / 2**20
    if res["steps"][imported].get("rc") == 0:
        manifest = json.loads((data / "manifest.json").read_text())
        res["num_partitions"] = next(iter(manifest["entities"].values()))["num_partitions"]
        res["train_edges"] = manifest["splits"]["train"]["num_edges"]
        res["test_edges"] = manifest["splits"]["test"]["num_edges"]
        res["num_nodes"] = sum(sum(e["counts"]) for e in manifest["entities"].values())
        (graph / "valid.tsv").unlink(missing_ok=True)
        (graph / "train.tsv").unlink(missing_ok=True)  # only test.tsv is needed from here on
    train_cmd = [*BIGEMBED, "train", str(data), "-o", str(run), "--dim", dim, "--epochs", "1", "--memory", mem,
                 *PBG_STYLE_SETS, "--no-progress"]
    step("train", train_cmd, run, (imported,))
    if (run / "stats.jsonl").exists():
        ep = epoch_seconds(run / "stats.jsonl")
        res["epoch_s"] = ep[0] if ep else None
    neg = str(args.negatives)
    ev = [*BIGEMBED, "eval", str(run), str(data), "--split", "test", "--protocol", "sampled", "--negatives", neg,
          "--no-progress", "--json"]
    if step("eval", [*ev, str(work / "metrics.json")], None, ("train",)) and (work / "metrics.json").exists():
        res["metrics"] = json.loads((work / "metrics.json").read_text())
    # v0 is the initial embedding (epoch 0), kept when the epoch committed no more than one version
    if (args.untrained and edges <= args.untrained_max_edges and (run / "checkpoints" / "v0").exists()
            and step("eval v0", [*ev, str(work / "metrics_v0.json"), "--version", "v0"], None, ("train",))
            and (work / "metrics_v0.json").exists()):
        res["metrics_v0"] = json.loads((work / "metrics_v0.json").read_text())
    res["random_mrr"] = random_mrr(args.negatives)
    step("export", [*BIGEMBED, "export", str(run), "--data", str(data), "-o", str(out), "--format", "npy",
                    "--no-progress"], out, ("train",))
    res["disk_mib"] = {name: du_bytes(p) / 2**20 for name, p in
                       (("graph", graph), ("data", data), ("run", run), ("out", out))}
    print(f"  disk MiB: {res['disk_mib']}", flush=True)
    return res


def table(results: list[dict]) -> str:
    lines = ["| edges | nodes | P | step | wall s | edges/s | peak RSS MiB | wrote MiB | folder peak MiB | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        per = {"import": r.get("train_edges", 0) + r.get("test_edges", 0), "train": r.get("train_edges", 0)}
        per["generate|import"] = per["import"]
        for name, s in r["steps"].items():
            if s.get("rc") is None:
                lines.append(f"| {r['edges']:,} | {r['nodes']:,} | {r.get('num_partitions', '')} | {name} | | | | | | "
                             f"{s['error']} |")
                continue
            rate = ""
            if s["rc"] == 0 and per.get(name):
                rate = f"{per[name] / s['wall_s']:,.0f}"
            note = "" if s["rc"] == 0 else f"FAILED: {s['error']}"
            if name == "train" and r.get("epoch_s"):
                note = (note + " " if note else "") + \
                    f"epoch {r['epoch_s']:.0f} s = {r['train_edges'] / r['epoch_s']:,.0f} edges/s"
            if name == "eval" and r.get("metrics"):
                m = r["metrics"]
                note = f"MRR {m['mrr']:.4f}, Hits@10 {m['hits@10']:.4f} (random {r['random_mrr']:.4f})"
            if name == "eval v0" and r.get("metrics_v0"):
                note = f"untrained MRR {r['metrics_v0']['mrr']:.4f}"
            shown = name.replace("|", " \\| ")  # a markdown table cell
            wrote = "" if s.get("wrote_mib") is None else f"{s['wrote_mib']:,.0f}"
            lines.append(f"| {r['edges']:,} | {r['nodes']:,} | {r.get('num_partitions', '')} | {shown} "
                         f"| {s['wall_s']:.1f} | {rate} | {s['rss_mib'] or 0:,.0f} | {wrote} "
                         f"| {s['disk_peak_mib']:,.0f} | {note} |")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--emit-train":
        emit_train(int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", nargs="+", default=["10M:1M", "100M:10M", "200M:40M"], help="EDGES:NODES")
    ap.add_argument("--pipe", action="store_true", help="pipe the generator into the importer (no train.tsv)")
    ap.add_argument("--memory", default="16G")
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--negatives", type=int, default=1000)
    ap.add_argument("--untrained", action=argparse.BooleanOptionalAction, default=True,
                    help="also rank the run's v0 checkpoint (the untrained embedding), if it has one")
    ap.add_argument("--untrained-max-edges", type=count, default=20_000_000,
                    help="only for sizes up to this many edges (it costs as much as the eval)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/billion"))
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per command")
    ap.add_argument("--budget-minutes", type=float, default=0, help="start no new command after this (0: none)")
    ap.add_argument("--keep", action="store_true", help="keep the last size's files")
    args = ap.parse_args()
    args.deadline = time.time() + args.budget_minutes * 60 if args.budget_minutes else 0
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "log.txt"
    results = []
    for i, size in enumerate(args.sizes):
        edges, nodes = (count(x) for x in size.split(":"))
        results.append(run_size(edges, nodes, args, log))
        (args.work / "results.json").write_text(json.dumps(results, indent=1))
        if not (args.keep and i == len(args.sizes) - 1):
            shutil.rmtree(args.work / f"{edges}e_{nodes}n", ignore_errors=True)
    print()
    print(table(results))


if __name__ == "__main__":
    main()

"""Import engines side by side on one generated file: whole-command wall time, edges/s, peak RSS.

Sides (each a fresh output folder, run alternately, the order reversed every other round):

  new   bigembed import FILE -o D -p P --no-progress          (one pass: pyarrow + DuckDB)
  old   python -c: plan_import + write_plan, P partitions      (the two-pass importer)
  pbg   PyTorch-BigGraph 1.0.0's import_from_tsv, P partitions (its own venv; static relations)
  pipe  cat FILE | bigembed import - -o D -p P --no-progress
  int   bigembed import INTFILE --ids int -o D -p P --no-progress (the same graph with integer ids)
  new@tree, int@tree  new and int with the bigembed of another checkout (--tree, on PYTHONPATH),
        e.g. an earlier commit's worktree: `git worktree add /tmp/wt COMMIT`

PBG never becomes a bigembed dependency: it runs in /tmp/pbgvenv through the driver of
benchmarks/pbg_baseline.py (create the venv as its VENV_HELP says). PBG is given its
relation names in the config (static relations, as pbg_baseline.py trains), so it reads the
file twice (entities, then edges); bigembed discovers the relations from the data.

PBG's edge pass appends one edge at a time (about 2k edges/s here), so a 10M-edge import
would take over an hour per round. Its run is stopped after --pbg-limit seconds: each of its
output lines is timestamped, and the whole-command time is extrapolated as (time until its
edge pass starts) + (edges) / (edge-pass rate between its first and last "Processed N edges"
lines); its peak RSS is the process's VmHWM until then. A run that ends within the limit is
reported as measured.

Usage:
  python benchmarks/import_engines.py [--nodes 1000000] [--edges 10500000] [--partitions 4]
      [--rounds 2] [--sides new old pbg pipe int] [--work /tmp/import_engines] [--keep]
      [--pbg-limit 300] [--tree CHECKOUT --sides new new@tree int int@tree]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from timed import Timed, du_bytes, run_timed  # noqa: E402

PY = sys.executable
BIGEMBED = [PY, "-m", "bigembed.cli.main"]
SIDES = ("new", "old", "pbg", "pipe", "int", "new@tree", "int@tree")
OLD_IMPORTER = (
    "import sys; from pathlib import Path; "
    "from bigembed.partitioner import ImportSpec, Source, plan_import, write_plan; "
    "write_plan(plan_import(ImportSpec(sources=[Source('train', Path(sys.argv[1]))], "
    "num_partitions=int(sys.argv[3]))), Path(sys.argv[2]))"
)


def pbg_files(work: Path, relations: int, partitions: int, pbg_python: str) -> Path:
    """PBG's config and driver (pbg_baseline.py's) in work/pbg; returns the config's path."""
    from pbg_baseline import DRIVER, pbg_version

    print(f"torchbiggraph {pbg_version(pbg_python)} in {pbg_python}", flush=True)
    folder = work / "pbg"
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "entity_path": str(work / "out-pbg"),
        "edge_paths": [],
        "checkpoint_path": str(work / "pbg-checkpoints"),
        "entities": {"node": {"num_partitions": partitions}},
        "relations": [{"name": f"r{r}", "lhs": "node", "rhs": "node", "operator": "none"}
                      for r in range(relations)],
        "dynamic_relations": False,
        "dimension": 64,
    }
    (folder / "pbg_config.py").write_text(f"def get_torchbiggraph_config():\n    return {config!r}\n")
    (folder / "pbg_driver.py").write_text(DRIVER)
    return folder / "pbg_config.py"


def run_pbg_limited(cmd: list[str], lines: int, limit: float, log: Path) -> tuple[Timed, dict]:
    """PBG's importer for at most ``limit`` seconds; (result, how its time was extrapolated)."""
    import os
    import re
    import signal
    import threading
    import time

    marks: list[tuple[float, str]] = []
    start = time.perf_counter()
    proc = subprocess.Popen([cmd[0], "-u", *cmd[1:]], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)

    def reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            marks.append((time.perf_counter() - start, line.rstrip("\n")))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    hwm = 0
    while proc.poll() is None:
        try:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            hwm = max(hwm, int(re.search(r"VmHWM:\s+(\d+)", status).group(1)))
        except (OSError, AttributeError):
            pass
        if time.perf_counter() - start > limit:
            os.killpg(proc.pid, signal.SIGKILL)  # the session this run started
            break
        time.sleep(0.5)
    rc = proc.wait()
    wall = time.perf_counter() - start
    thread.join(timeout=5)
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n" + "".join(f"[{t:8.2f}] {m}\n" for t, m in marks))
    edge_start = next((t for t, m in marks if m.startswith("Preparing edge path")), None)
    progress = [(t, int(m.split()[2])) for t, m in marks if m.startswith("- Processed ")]
    info: dict = {"finished": rc == 0, "edge_pass_start_s": edge_start, "progress_lines": len(progress)}
    if rc == 0:
        return Timed(shlex.join(cmd), 0, wall, hwm / 1024), info
    if edge_start is None or len(progress) < 2:
        return Timed(shlex.join(cmd), rc, wall, hwm / 1024, f"stopped after {limit:.0f} s, too few marks"), info
    (t0, n0), (t1, n1) = progress[0], progress[-1]
    rate = (n1 - n0) / (t1 - t0)
    info.update(edge_rate=rate, measured_s=wall, edges_done=n1)
    return Timed(shlex.join(cmd), 0, edge_start + lines / rate, hwm / 1024), info


def command(side: str, args: argparse.Namespace, out: Path, config: Path | None) -> list[str] | str:
    side = side.removesuffix("@tree")  # the same command; run_side puts the tree on PYTHONPATH
    p = str(args.partitions)
    string_file, int_file = args.work / "graph-string" / "train.tsv", args.work / "graph-int" / "train.tsv"
    if side == "new":
        return [*BIGEMBED, "import", str(string_file), "-o", str(out), "-p", p, "--no-progress"]
    if side == "old":
        return [PY, "-c", OLD_IMPORTER, str(string_file), str(out), p]
    if side == "pbg":
        assert config is not None
        return [args.pbg_python, "-W", "ignore", str(config.parent / "pbg_driver.py"), "import", str(config),
                str(string_file), str(out / "edges-train")]
    if side == "pipe":
        return (f"cat {shlex.quote(str(string_file))} | {shlex.join(BIGEMBED)} import - -o {shlex.quote(str(out))} "
                f"-p {p} --no-progress")
    if side == "int":
        return [*BIGEMBED, "import", str(int_file), "--ids", "int", "-o", str(out), "-p", p, "--no-progress"]
    raise ValueError(side)


def shown(side: str, args: argparse.Namespace) -> str:
    """The command as a person would type it (for the table)."""
    f, i, p = "train.tsv", "train-int.tsv", args.partitions
    if side.endswith("@tree"):
        return f"PYTHONPATH={args.tree} " + shown(side.removesuffix("@tree"), args)
    return {
        "new": f"bigembed import {f} -o D -p {p} --no-progress",
        "old": f"python -c 'write_plan(plan_import(ImportSpec([Source(\"train\", {f})], num_partitions={p})), D)'",
        "pbg": f"torchbiggraph 1.0.0 convert_input_data({f}, {p} partitions, static relations)",
        "pipe": f"cat {f} | bigembed import - -o D -p {p} --no-progress",
        "int": f"bigembed import {i} --ids int -o D -p {p} --no-progress",
    }[side]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1_000_000)
    ap.add_argument("--edges", type=int, default=10_500_000, help="generated in all (train is about 90%%)")
    ap.add_argument("--relations", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sides", nargs="+", default=list(SIDES), choices=SIDES)
    ap.add_argument("--work", type=Path, default=Path("/tmp/import_engines").resolve())
    ap.add_argument("--pbg-python", default="/tmp/pbgvenv/bin/python")
    ap.add_argument("--tree", type=Path, help="another checkout's root, for the new@tree and int@tree sides")
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--pbg-limit", type=float, default=300, help="seconds before PBG is stopped and extrapolated")
    ap.add_argument("--keep", action="store_true", help="keep the generated graphs for another run")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "log.txt"
    for ids in ("string", "int"):
        graph = args.work / f"graph-{ids}"
        if not (graph / "train.tsv").exists():
            subprocess.run([*BIGEMBED, "generate", "-o", str(graph), "--nodes", str(args.nodes), "--edges",
                            str(args.edges), "--relations", str(args.relations), "--ids", ids, "--no-progress"],
                           check=True)
    train = args.work / "graph-string" / "train.tsv"
    with open(train, "rb") as f:
        lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 24), b""))
    size_mib = train.stat().st_size / 2**20
    print(f"{train}: {lines} edges, {size_mib:.0f} MiB "
          f"(int ids: {(args.work / 'graph-int' / 'train.tsv').stat().st_size / 2**20:.0f} MiB)", flush=True)
    config = pbg_files(args.work, args.relations, args.partitions, args.pbg_python) if "pbg" in args.sides else None

    results: dict[str, list[dict]] = {s: [] for s in args.sides}
    for rnd in range(args.rounds):
        order = args.sides if rnd % 2 == 0 else list(reversed(args.sides))
        for side in order:
            out = args.work / f"out-{side}"
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(args.work / "pbg-checkpoints", ignore_errors=True)
            if side == "pbg":
                out.mkdir(parents=True)
            cmd = command(side, args, out, config)
            extra: dict = {}
            if side == "pbg":
                assert isinstance(cmd, list)
                t, extra = run_pbg_limited(cmd, lines, args.pbg_limit, log)
            else:
                env, cwd = None, None
                if side.endswith("@tree"):  # `python -m` puts the working folder first on sys.path
                    env, cwd = {**os.environ, "PYTHONPATH": str(args.tree)}, args.tree
                t = run_timed(cmd, log=log, timeout=args.timeout, env=env, cwd=cwd)
            row = {**t.as_dict(), **extra, "round": rnd, "disk_mib": du_bytes(out) / 2**20}
            results[side].append(row)
            status = "ok" if t.ok else f"FAILED: {t.error}"
            if extra and not extra["finished"] and t.ok:
                status = (f"EXTRAPOLATED: stopped at {extra['measured_s']:.0f} s after {extra['edges_done']:,} edges; "
                          f"edge pass from {extra['edge_pass_start_s']:.1f} s at {extra['edge_rate']:,.0f} edges/s")
            print(f"round {rnd} {side:>4}: {t.wall_s:7.1f} s  {lines / t.wall_s:>10,.0f} edges/s  "
                  f"peak RSS {t.rss_mib or 0:7.0f} MiB  out {row['disk_mib']:.0f} MiB  {status}", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    (args.work / "results.json").write_text(json.dumps({"edges": lines, "file_mib": size_mib,
                                                         "results": results}, indent=1))

    print(f"\n{lines:,} edges, {size_mib:.0f} MiB text, P={args.partitions}, {args.rounds} alternating rounds "
          "(median, min-max)\n")
    print("| side | command | wall s | edges/s | peak RSS MiB | DATA MiB |")
    print("|---|---|---|---|---|---|")
    for side in args.sides:
        rows = [r for r in results[side] if r["rc"] == 0]
        if not rows:
            print(f"| {side} | `{shown(side, args)}` | failed: {results[side][0]['error']} | | | |")
            continue
        walls = [r["wall_s"] for r in rows]
        star = " (extrapolated)" if any(r.get("finished") is False for r in rows) else ""
        rss = [r["rss_mib"] or 0 for r in rows]
        rate = [lines / w for w in walls]
        print(f"| {side} | `{shown(side, args)}` "
              f"| {statistics.median(walls):.1f} ({min(walls):.1f}-{max(walls):.1f}){star} "
              f"| {statistics.median(rate):,.0f} ({min(rate):,.0f}-{max(rate):,.0f}) "
              f"| {statistics.median(rss):,.0f} ({min(rss):,.0f}-{max(rss):,.0f}) "
              f"| {rows[0]['disk_mib']:.0f}{' (partial: stopped)' if star else ''} |")
    if not args.keep:
        shutil.rmtree(args.work / "graph-string")
        shutil.rmtree(args.work / "graph-int")


if __name__ == "__main__":
    main()

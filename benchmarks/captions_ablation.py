"""Do captions help? Train the no-argument demo's recipe in several arms x seeds on the toy tree of
life and evaluate every model with biocap-eval.

    uv run python benchmarks/captions_ablation.py [--budget-minutes 25] [--out ablation]
    uv run python benchmarks/captions_ablation.py --quick          # smoke run: 2 arms x 1 seed
    uv run python benchmarks/captions_ablation.py --arms noisy --seeds 3   # one arm, one more seed

Arms (each the demo, ``biocap-train`` with no data flags, plus the arm's flags and ``--seed S``):

- ``names``: names only (``--caption-share 0``, BioCLIP's recipe);
- ``biocap``: BioCAP (captions 1/6 of the steps through their own projector, the default);
- ``joint``: both heads every step (``--joint-loss``);
- ``noisy``: BioCAP on a toy whose training captions have 30% of their trait phrases wrong or
  missing (``biocap-core toy --caption-noise 0.3``, otherwise the demo's toy);
- ``shared``: captions through the taxonomic projector (``--caption-head shared``).

Each model is evaluated by ``biocap_eval.runner.run`` (what ``biocap-eval run --benchmarks toy``
does) with each head that was trained (``--head tax``, and ``--head caption`` where captions have
their own projector), on the toy benchmarks plus a genus-level zero-shot set written beside them.
Metrics: zero-shot species and genus top-1, INQUIRE AP per supercategory, retrieval R@1 both ways.

Runs go seed by seed (every arm's seed 0, then seed 1 ...), so a budget that runs out leaves the
arms with the same seeds. Each finished run writes ``OUT/runs/<arm>-seed<S>/result.json``
atomically; running the same command again skips finished runs and continues (a run killed during
training restarts it; one killed while evaluating keeps its trained model, and its training seconds
are then those of finding it finished, near 0). ``--budget-minutes`` stops before a run that would
end past the budget (estimated from the runs so far). Written next to each other in OUT:
``runs.csv`` and ``runs.json`` (every run and head), ``table.md`` (mean ± std per arm and head) and
``ablation.png`` (grouped bars with error bars, one panel per metric family).

Prints figures only; nothing here is a test.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import resource
import statistics
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

from biocap_core.cache import cache_dir
from biocap_core.fileio import atomic_write
from biocap_core.taxonomy import Taxon
from biocap_core.toy import ToyConfig

# biocap-train and biocap-eval are imported where a run needs them: importing them (OpenCLIP)
# costs about 10 CPU seconds, which a command that only reports finished runs need not pay.


@dataclass(frozen=True)
class Arm:
    label: str
    flags: tuple[str, ...] = ()
    #: Heads evaluated: ``caption`` only where captions trained a projector of their own.
    heads: tuple[str, ...] = ("tax", "caption")
    caption_noise: float = 0.0


ARMS = {
    "names": Arm("names only", ("--caption-share", "0"), heads=("tax",)),
    "biocap": Arm("BioCAP"),
    "joint": Arm("joint loss", ("--joint-loss",)),
    "noisy": Arm("BioCAP, 30% noisy captions", caption_noise=0.3),
    "shared": Arm("one shared projector", ("--caption-head", "shared"), heads=("tax",)),
}
QUICK_ARMS, QUICK_STEPS = ("biocap", "shared"), 4

#: Result column -> (toy benchmark, its metric); the families are the plot's panels.
METRICS = {
    "species_top1": ("toy-zeroshot", "top1"),
    "genus_top1": ("toy-zeroshot-genus", "top1"),
    "inquire_ap_Appearance": ("toy-inquire", "ap_Appearance"),
    "inquire_ap_Behavior": ("toy-inquire", "ap_Behavior"),
    "inquire_ap_Context": ("toy-inquire", "ap_Context"),
    "inquire_ap_Species": ("toy-inquire", "ap_Species"),
    "retrieval_i2t_R@1": ("toy-retrieval", "i2t_R@1"),
    "retrieval_t2i_R@1": ("toy-retrieval", "t2i_R@1"),
}
FAMILIES = {
    "Zero-shot top-1 (%)": ("species_top1", "genus_top1"),
    "Toy INQUIRE AP (%)": tuple(m for m in METRICS if m.startswith("inquire")),
    "Toy retrieval R@1 (%)": ("retrieval_i2t_R@1", "retrieval_t2i_R@1"),
}
TICKS = {
    "species_top1": "species",
    "genus_top1": "genus",
    **{f"inquire_ap_{s}": s for s in ("Appearance", "Behavior", "Context", "Species")},
    "retrieval_i2t_R@1": "image→text",
    "retrieval_t2i_R@1": "text→image",
}
RUN_COLUMNS = (
    "arm",
    "arm_label",
    "seed",
    "head",
    "steps",
    "train_seconds",
    "train_cpu_seconds",
    "eval_seconds",
    "eval_cpu_seconds",
)


# ---- the toy worlds ----
def noisy_toy(clean: Path, cache: Path, noise: float) -> Path:
    """The demo's toy (``clean``, same generator settings) with ``noise`` caption noise, in the
    demo's layout under ``cache`` so the demo finds it there; generated once, atomically."""
    from biocap_train.demo import ensure_toy

    config = json.loads((clean / "manifest.json").read_text())["config"]
    return ensure_toy(cache, dataclasses.replace(ToyConfig(**config), caption_noise=noise))


def genus_benchmark(toy: Path, annotation: Path):
    """Zero-shot at the genus rank over the toy's zero-shot images: each image's class is the
    taxonomic name down to its genus (what a ``taxon`` text says at that rank). The table is
    written to ``annotation`` (in the results folder: the demo's toy stays as generated)."""
    if not annotation.is_file():
        with open(toy / "zeroshot" / "camera_trap.csv", newline="") as f:
            rows = [
                {
                    "filepath": r["filepath"],
                    "class": dataclasses.replace(Taxon.from_mapping(r), species="").taxonomic,
                }
                for r in csv.DictReader(f)
            ]

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                out = csv.DictWriter(f, ("filepath", "class"))
                out.writeheader()
                out.writerows(rows)

        atomic_write(annotation, write)
    from biocap_eval.benchmark import Benchmark

    return Benchmark(
        name="toy-zeroshot-genus",
        title="Toy tree of life, zero-shot at the genus rank",
        task="zeroshot",
        table="zeroshot",
        columns={"Toy genus": "top1"},
        annotation=str(annotation),  # absolute: data_root / annotation is the annotation itself
        images="zeroshot",
        label_type="asis",
    )


# ---- one run ----
def train(arm: Arm, seed: int, run_dir: Path, cache: Path, steps: int | None) -> dict:
    """The demo with the arm's flags (``biocap-train``'s command line, in this process: a child
    process would import OpenCLIP again for each run), its output in ``train.log``; its wall and
    CPU seconds (data workers included)."""
    from biocap_train.cli import main as biocap_train

    argv = [*arm.flags, "--seed", str(seed), "--logs", str(run_dir.parent), "--name"]
    argv += [run_dir.name, "--resume", "latest", "--no-progress"]
    argv += ["--steps", str(steps)] if steps else []
    run_dir.mkdir(parents=True, exist_ok=True)
    log, user_cache = run_dir / "train.log", os.environ.get("BIOCAP_CACHE")
    os.environ["BIOCAP_CACHE"] = str(cache)  # where the demo finds its toy
    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    try:
        with open(log, "w") as f, redirect_stdout(f), redirect_stderr(f):
            biocap_train(argv)
    except SystemExit as exc:
        if exc.code not in (None, 0):
            tail = "\n".join(log.read_text().splitlines()[-15:])
            sys.exit(f"biocap-train {' '.join(argv)} failed: {exc.code}\n{tail}")
    finally:
        if user_cache is None:
            os.environ.pop("BIOCAP_CACHE")
        else:
            os.environ["BIOCAP_CACHE"] = user_cache
    return {
        "train_seconds": round(time.perf_counter() - wall0, 1),
        "train_cpu_seconds": round(cpu_seconds() - cpu0, 1),
    }


def cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the data workers)."""
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


@dataclass(frozen=True)
class Toy:
    """A toy tree of life the runs train on (in the demo's layout under its cache folder) and its
    genus-level zero-shot set."""

    root: Path
    genus: object  #: a biocap_eval Benchmark


def evaluate(checkpoint: Path, head: str, toy: Toy, out: Path) -> dict[str, float]:
    """The toy benchmarks and the genus set for one head, as ``biocap-eval run`` writes them."""
    from biocap_eval.registry import load_registry, select
    from biocap_eval.runner import ModelSpec, RunOptions, run
    from biocap_eval.tasks import Settings

    benchmarks = select(load_registry(), ["toy"]) + [toy.genus]
    spec = ModelSpec(str(checkpoint), head=head)
    options = RunOptions(toy.root, out_dir=out, device="cpu", workers=0)
    summary = run(spec, benchmarks, Settings(), options, log=lambda _: None)
    if summary.failed:
        sys.exit(f"evaluation of {checkpoint} failed: {summary.failed}")
    results = {b: json.loads(p.read_text())["metrics"] for b, p in summary.paths.items()}
    return {column: results[b][m] for column, (b, m) in METRICS.items()}


def run_once(name: str, seed: int, out: Path, toys: dict[float, Toy], steps: int | None) -> dict:
    """Train and evaluate one arm and seed; its result, also written atomically to
    ``result.json`` in its run folder."""
    from biocap_train.checkpointing import latest_checkpoint

    arm, run_dir, started = ARMS[name], result_path(out, name, seed).parent, time.perf_counter()
    toy = toys[arm.caption_noise]
    timing = train(arm, seed, run_dir, toy.root.parent, steps)
    checkpoint = latest_checkpoint(run_dir)
    step = int(checkpoint.stem.split("_")[-1])
    rows = []
    for head in arm.heads:
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        metrics = evaluate(checkpoint, head, toy, run_dir / "eval")
        spent = {
            "eval_seconds": round(time.perf_counter() - wall0, 1),
            "eval_cpu_seconds": round(cpu_seconds() - cpu0, 1),
        }
        rows.append(
            {"arm": name, "arm_label": arm.label, "seed": seed, "head": head, "steps": step}
            | timing
            | spent
            | metrics
        )
    result = {"arm": name, "seed": seed, "checkpoint": str(checkpoint), "rows": rows}
    result["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write(run_dir / "result.json", lambda tmp: tmp.write_text(json.dumps(result, indent=1)))
    return result


# ---- outputs ----
def collect(out: Path, names: list[str], seeds: list[int]) -> list[dict]:
    rows = []
    for name in names:
        for seed in seeds:
            path = result_path(out, name, seed)
            if path.is_file():
                rows += json.loads(path.read_text())["rows"]
    return rows


def groups(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows by arm and head, in the arms' order: 'BioCAP (caption head)'."""
    out: dict[str, list[dict]] = {}
    for name in ARMS:
        for head in ("tax", "caption"):
            chosen = [r for r in rows if r["arm"] == name and r["head"] == head]
            if chosen:
                out[f"{ARMS[name].label} ({head} head)"] = chosen
    return out


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def write_outputs(out: Path, rows: list[dict]) -> None:
    columns = [*RUN_COLUMNS, *METRICS]

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, columns)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(out / "runs.csv", write_csv)
    atomic_write(out / "runs.json", lambda tmp: tmp.write_text(json.dumps(rows, indent=1)))
    lines = [
        "| arm (head) | seeds | " + " | ".join(METRICS) + " |",
        "|---|---|" + "---|" * len(METRICS),
    ]
    for label, chosen in groups(rows).items():
        cells = [
            f"{m:.1f} ± {s:.1f}" for m, s in (mean_std([r[c] for r in chosen]) for c in METRICS)
        ]
        lines.append(f"| {label} | {len(chosen)} | " + " | ".join(cells) + " |")
    atomic_write(out / "table.md", lambda tmp: tmp.write_text("\n".join(lines) + "\n"))
    atomic_write(out / "ablation.png", lambda tmp: plot(rows, tmp))


def plot(rows: list[dict], path: Path) -> None:
    """Grouped bars (one per arm and head) with the seeds' standard deviation, one panel per
    family."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_group = groups(rows)
    widths = [len(cols) for cols in FAMILIES.values()]
    fig, axes = plt.subplots(
        1, len(FAMILIES), figsize=(15, 4.5), gridspec_kw={"width_ratios": widths}
    )
    bar = 0.8 / max(1, len(by_group))
    for ax, (title, cols) in zip(axes, FAMILIES.items()):
        for i, (label, chosen) in enumerate(by_group.items()):
            stats = [mean_std([r[c] for r in chosen]) for c in cols]
            ax.bar(
                [x + (i - (len(by_group) - 1) / 2) * bar for x in range(len(cols))],
                [m for m, _ in stats],
                bar,
                yerr=[s for _, s in stats],
                capsize=2,
                label=label,
                hatch="//" if label.endswith("(caption head)") else None,
            )
        ax.set_xticks(range(len(cols)), [TICKS[c] for c in cols], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylim(bottom=0)
    seeds = sorted({r["seed"] for r in rows})
    fig.suptitle(f"Do captions help? Toy tree of life, mean ± std over seeds {seeds}", fontsize=11)
    axes[-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=110)
    plt.close(fig)


# ---- the command ----
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("ablation"), help="Results folder.")
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), help="Default: all five.")
    parser.add_argument("--seeds", nargs="+", type=int, help="Default: 0 1 2 (--quick: 0).")
    parser.add_argument(
        "--steps", type=int, help="Optimiser steps per run (default: the demo's; --quick: 4)."
    )
    parser.add_argument(
        "--budget-minutes",
        type=float,
        default=25.0,
        help="Start no run that would end past this (estimated from the runs so far).",
    )
    parser.add_argument(
        "--cache",
        type=Path,
        help="Cache folder of the demo's toy (default: the demo's, $BIOCAP_CACHE or ~/.cache).",
    )
    parser.add_argument(
        "--quick", action="store_true", help="Smoke run: 2 arms x 1 seed x 4 steps."
    )
    args = parser.parse_args(argv)
    args.arms = args.arms or list(QUICK_ARMS if args.quick else ARMS)
    args.seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    args.steps = args.steps or (QUICK_STEPS if args.quick else None)
    return args


def prepare_toys(args: argparse.Namespace, out: Path) -> dict[float, Toy]:
    """The toys the chosen arms train on, by caption noise: the demo's own (generated into its
    cache folder if absent) and a noisy copy of it under ``out``."""
    from biocap_train.demo import ensure_toy

    clean = ensure_toy(args.cache.resolve() if args.cache else cache_dir())
    roots = {0.0: clean}
    for noise in {ARMS[a].caption_noise for a in args.arms} - {0.0}:
        roots[noise] = noisy_toy(clean, out / f"toy-caption-noise-{noise:g}", noise)
    return {
        noise: Toy(root, genus_benchmark(root, out / f"zeroshot-genus-noise-{noise:g}.csv"))
        for noise, root in roots.items()
    }


def print_plan(args: argparse.Namespace, out: Path, todo: list, pending: list) -> list[float]:
    """Say what will run and how long it should take; the seconds of the runs finished earlier."""
    from biocap_train.demo import DEMO

    done = [
        json.loads(result_path(out, a, s).read_text()) for a, s in todo if (a, s) not in pending
    ]
    seconds = [r["seconds"] for r in done if "seconds" in r]
    recipe = ", ".join(f"{k} {v}" for k, v in DEMO.items() if k in ("model", "batch_size", "lr"))
    steps = f"--steps {args.steps}" if args.steps else f"{DEMO.get('epochs')} epochs"
    estimate = (
        f"about {len(pending) * statistics.fmean(seconds) / 60:.1f} min at "
        f"{statistics.fmean(seconds):.0f} s per run so far"
        if seconds
        else "time per run measured after the first"
    )
    print(
        f"plan: {len(args.arms)} arm(s) {args.arms} x seeds {args.seeds} = {len(todo)} runs, "
        f"{len(todo) - len(pending)} finished earlier; each the demo ({recipe}, {steps}) and "
        f"its evaluation; {estimate}; budget {args.budget_minutes:g} min; results in {out}",
        flush=True,
    )
    return seconds


def result_path(out: Path, arm: str, seed: int) -> Path:
    return out / "runs" / f"{arm}-seed{seed}" / "result.json"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    out, started = args.out.resolve(), time.perf_counter()
    todo = [(a, s) for s in args.seeds for a in args.arms]
    pending = [(a, s) for a, s in todo if not result_path(out, a, s).exists()]
    if pending:
        seconds = print_plan(args, out, todo, pending)
        toys = prepare_toys(args, out)
    else:
        print(f"all {len(todo)} runs finished earlier; reporting them", flush=True)
    for i, (name, seed) in enumerate(pending):
        elapsed = time.perf_counter() - started
        if seconds and elapsed + statistics.fmean(seconds) > 60 * args.budget_minutes:
            print(
                f"budget: {len(pending) - i} run(s) left would end past {args.budget_minutes:g} "
                "min; run the same command again to continue (finished runs are kept)"
            )
            break
        result = run_once(name, seed, out, toys, args.steps)
        seconds.append(result["seconds"])
        row = result["rows"][0]
        print(
            f"[{i + 1}/{len(pending)}] {name} seed {seed}: {row['steps']} steps, train "
            f"{row['train_seconds']:.0f} s ({row['train_cpu_seconds']:.0f} CPU s), with evaluation "
            f"{result['seconds']:.0f} s; species top-1 {row['species_top1']:.1f}% (tax head)",
            flush=True,
        )
    rows = collect(out, args.arms, args.seeds)
    if not rows:
        sys.exit("no finished run to report")
    write_outputs(out, rows)
    print((out / "table.md").read_text())
    names = ("runs.csv", "runs.json", "table.md", "ablation.png")
    print("written: " + ", ".join(str(out / n) for n in names))


if __name__ == "__main__":
    main()

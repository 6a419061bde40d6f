"""``r2end baseline | train | export | ablations | evaluate | align | bench | report``: the model commands."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from training.cli.common import DatasetArg, FormatOpt, PathOpt, SetOpt, build_config, check_field, console, fail, load_dataset
from training.r2end.config import ABLATIONS

app = typer.Typer()
log = logging.getLogger(__name__)

DatasetOpt = Annotated[str, typer.Option(help="dataset: ml-100k, ml-1m or one added with `r2end data add`")]
VariantOpt = Annotated[
    str,
    typer.Option(
        help="name of this configuration in results and bundles; a known variant also brings its settings, which"
        f" --config-file and --set override: {', '.join(ABLATIONS)}"
    ),
]
RunVariantOpt = Annotated[str, typer.Option(help="the run to export: the --variant it was trained with")]
BundleOutOpt = Annotated[Path | None, typer.Option(help="bundle output folder (default $R2END_HOME/bundles/<dataset>/<variant>)")]
TeacherDirOpt = Annotated[Path | None, typer.Option(help="teacher data folder (default: the repo's data/teacher)")]


def _r2end_config(dataset: str, variant: str, config_file: Path | None, sets: list[str], **extra: Any):
    """R2ENDConfig from the dataset, the variant's preset (training/r2end/config.py's ABLATIONS, when it names one), an
    optional JSON file and ``--set`` overrides (in that order)."""
    from training.r2end.config import R2ENDConfig

    values: dict[str, Any] = {"dataset": dataset, "variant": variant, **ABLATIONS.get(variant, {}), **extra}
    if config_file is not None:
        try:
            from_file = json.loads(config_file.read_text())
            for key in from_file if isinstance(from_file, dict) else ():
                check_field(key, R2ENDConfig)
        except (OSError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
            fail(f"{config_file}: {exc}")
        if not isinstance(from_file, dict):
            fail(f"{config_file}: expected a JSON object, got {type(from_file).__name__}")
        values.update(from_file)
    return build_config(R2ENDConfig, sets, **values)


def _grid_subset(items: list[str]) -> dict[str, list[Any]]:
    """``--only hidden=128,256`` -> ``{"hidden": [128, 256]}`` (values read as JSON, else kept as strings)."""
    subset: dict[str, list[Any]] = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep or not key.strip() or not values.strip():
            raise ValueError(f"--only {item!r}: expected key=value[,value...]")
        parsed = []
        for raw in values.split(","):
            try:
                parsed.append(json.loads(raw))
            except json.JSONDecodeError:
                parsed.append(raw.strip())
        subset[key.strip()] = parsed
    return subset


@app.command("baseline")
def baseline(
    name: Annotated[str, typer.Argument(help="pop, sasrec-ce or meanpool")],
    dataset: DatasetArg,
    grid: Annotated[
        str, typer.Option(help="SASRec tuning grid: none, small, wide (issue #12, 36 configurations), wide-1m")
    ] = "small",
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only", help="run a subset of the grid: key=v1,v2 (e.g. hidden=256); results go to $R2END_HOME/runs/partial-results"
        ),
    ] = None,
    max_epochs: Annotated[int | None, typer.Option(help="SASRec epoch cap (early stopping usually ends sooner)")] = None,
    threads: Annotated[int, typer.Option(help="torch threads for SASRec")] = 1,
    encoder: Annotated[str, typer.Option(help="encoder for meanpool")] = "all-MiniLM-L6-v2",
    max_items: Annotated[int, typer.Option(help="history items pooled by meanpool")] = 8,
    no_mask: Annotated[bool, typer.Option("--no-mask", help="do not mask history items when ranking")] = False,
    cold_start: Annotated[float, typer.Option(help="cold-start protocol: share of items held out of training (0 = off)")] = 0.0,
    set_: Annotated[list[str] | None, typer.Option("--set", help="SASRec config field: key=value (e.g. hidden=128)")] = None,
    status: Annotated[
        bool,
        typer.Option("--status", help="sasrec-ce: show where each trial of the grid stands (from its checkpoint); train nothing"),
    ] = False,
    archive: Annotated[
        bool,
        typer.Option(
            "--archive",
            help="sasrec-ce: keep each finished trial's record in data/runs/ (commit it) so the grid survives "
            "a lost $R2END_HOME; train nothing",
        ),
    ] = False,
    whole: Annotated[
        bool, typer.Option("--whole", help="with --archive: keep every checkpoint whole, unfinished ones too (MBs each)")
    ] = False,
    fmt: FormatOpt = None,
    path: PathOpt = None,
) -> None:
    """Train (if needed) and evaluate a baseline; writes docs/results/<dataset>/<name>.json."""
    from training import baselines
    from training.evaluation.report import results_root

    if name not in baselines.BASELINES:
        fail(f"unknown baseline {name!r}; known: {', '.join(baselines.BASELINES)}")
    if name == "sasrec-ce":  # checked before the (slow) data load
        from training.models.sasrec import SASRecConfig

        given = {"threads": threads, **({"max_epochs": max_epochs} if max_epochs else {})}
        overrides = build_config(SASRecConfig, set_ or [], **given).model_dump(exclude_unset=True)
        try:
            subset = _grid_subset(only or [])
            baselines.select_grid(grid, subset)
        except ValueError as exc:
            fail(str(exc))
    elif set_ or only or status or archive:
        fail(f"--set, --only, --status and --archive apply to sasrec-ce only, not {name}")
    if whole and not archive:
        fail("--whole applies to --archive only")
    ds = load_dataset(dataset, fmt, path)
    if status:
        _print_grid_status(baselines.grid_status(ds, grid, overrides, subset or None, cold_start), grid)
        return
    if archive:
        for trial, kept in baselines.archive_grid(ds, grid, overrides, subset or None, cold_start, whole, not no_mask):
            console.print(f"{trial}: {kept}")
        return
    if name == "pop":
        out = baselines.run_pop(ds, not no_mask, cold_start)
    elif name == "meanpool":
        out = baselines.run_meanpool(ds, encoder, max_items, not no_mask)
    else:
        out = baselines.run_sasrec(
            ds,
            grid,
            overrides,
            not no_mask,
            on_epoch=lambda label, e: log.info("%s %s", label, e),
            curve_path=results_root(ds.name) / ds.name / "sasrec-ce-curves.png",
            cold_share=cold_start,
            only=subset or None,
        )
    console.print(f"wrote {out}")


def _print_grid_status(rows: list[dict], grid: str) -> None:
    from rich.table import Table

    table = Table(title=f"SASRec-CE grid '{grid}': validation NDCG@10 of each trial's best epoch so far")
    for column in ("trial", "state", "epochs", "best epoch", "valid NDCG@10", "valid HR@10"):
        table.add_column(column, justify="left" if column in ("trial", "state") else "right")
    for row in rows:
        scores = [f"{row[k]:.4f}" if row[k] is not None else "-" for k in ("valid_NDCG@10", "valid_HR@10")]
        table.add_row(row["trial"], row["state"], str(row["epochs"]), str(row["best_epoch"] or "-"), *scores)
    console.print(table)
    done = [r for r in rows if r["state"].startswith("done")]
    line = f"{len(done)} of {len(rows)} trials done"
    if done:
        lead = max(done, key=lambda r: r["valid_NDCG@10"])
        line += f"; leading on validation among them: {lead['trial']} ({lead['valid_NDCG@10']:.4f})"
    console.print(line)


@app.command("train")
def train(
    dataset: DatasetOpt = "ml-100k",
    variant: VariantOpt = "r2end",
    config_file: Annotated[Path | None, typer.Option(help="JSON file of R2ENDConfig fields")] = None,
    set_: SetOpt = None,
    bundle: BundleOutOpt = None,
    no_export: Annotated[bool, typer.Option("--no-export", help="train and evaluate only")] = False,
    allow_partial: Annotated[
        bool, typer.Option(help="run even if teacher data is incomplete (results go to $R2END_HOME/runs)")
    ] = False,
    data_dir: TeacherDirOpt = None,
    results_dir: Annotated[
        Path | None,
        typer.Option(help="write the result JSON under this folder instead of docs/results (make demo: $R2END_HOME/results)"),
    ] = None,
) -> None:
    """Train R2END from cached teacher data, evaluate it, export the bundle."""
    from training.r2end.run import bundle_dir, train_and_report

    config = _r2end_config(dataset, variant, config_file, set_ or [])
    ds = load_dataset(dataset)
    target = None if no_export else (bundle or bundle_dir(dataset, variant))
    try:
        summary = train_and_report(config, ds, data_dir, target, allow_partial, results_dir)
    except RuntimeError as exc:
        fail(str(exc))
    console.print_json(json.dumps(summary))


@app.command("export")
def export(
    dataset: DatasetOpt = "ml-100k",
    variant: RunVariantOpt = "r2end",
    bundle: BundleOutOpt = None,
    index: Annotated[
        str, typer.Option(help="flat (exact) or hnsw (approximate; recall vs exact is measured and stored)")
    ] = "flat",
    int8: Annotated[bool, typer.Option(help="also write the int8 user graph")] = True,
) -> None:
    """Export the model `r2end train` left in $R2END_HOME/runs/<dataset>/<variant> as a bundle."""
    from training.export import export_bundle
    from training.r2end.artifacts import load_run
    from training.r2end.run import bundle_dir, run_dir

    folder = run_dir(dataset, variant)
    if not (folder / "run.json").is_file():
        fail(f"{folder}/run.json: missing; run `r2end train --dataset {dataset} --variant {variant}` first")
    model, history, meta = load_run(folder)
    ds = load_dataset(dataset)
    if meta.get("split_hash") and meta["split_hash"] != ds.split_hash:
        fail(f"{folder}: trained on a different split of {dataset}")
    target = bundle or bundle_dir(dataset, variant)
    manifest = export_bundle(
        model,
        ds,
        target,
        metrics=meta["report"].get("metrics", {}),
        int8=int8,
        index_kind=index,
        history_table=history,
        history_items=meta.get("history_items", 50),
        tower=meta.get("tower"),
        hybrid=meta.get("hybrid"),
    )
    console.print_json(json.dumps({"bundle": str(target), **manifest.metrics}))


@app.command("ablations")
def ablations(
    dataset: DatasetOpt = "ml-100k",
    only: Annotated[str | None, typer.Option(help="comma-separated subset of variant names")] = None,
    cold_start: Annotated[float, typer.Option(help="run under the cold-start protocol with this share of items held out")] = 0.0,
    with_baselines: Annotated[
        bool, typer.Option(help="also run Pop and SASRec-CE (its tuned config) under the same protocol")
    ] = False,
    allow_partial: bool = False,
    data_dir: TeacherDirOpt = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a base config field: key=value")] = None,
) -> None:
    """The paper's Table 2 and the R2END+CF variants, each a config switch, one result file each."""
    from training.r2end.run import ablation_configs, train_and_report

    if any(item.partition("=")[0].strip() == "cold_start_share" for item in set_ or []):
        fail("--set cold_start_share: use --cold-start SHARE (it also names the results <variant>-cold)")
    base = _r2end_config(dataset, "r2end", None, set_ or [], cold_start_share=cold_start)
    try:
        configs = ablation_configs(base, only.split(",") if only else None)
    except ValueError as exc:
        fail(str(exc))
    ds = load_dataset(dataset)
    suffix = "-cold" if cold_start > 0 else ""
    for config in configs:
        config = config.model_copy(update={"variant": config.variant + suffix})
        console.rule(config.variant)
        try:
            summary = train_and_report(config, ds, data_dir, None, allow_partial)
        except RuntimeError as exc:
            console.print(f"[yellow]skipped {config.variant}:[/yellow] {exc}", soft_wrap=True)
            continue
        console.print(f"{config.variant}: test {json.dumps({k: round(v, 4) for k, v in summary['test'].items()})}")
    if with_baselines:
        from training import baselines
        from training.evaluation.report import load_results

        tuned = next((r["config"]["best"] for r in load_results(dataset) if r["model"] == "sasrec-ce"), {})
        console.print(f"wrote {baselines.run_pop(ds, True, cold_start)}")
        console.print(f"wrote {baselines.run_sasrec(ds, 'none', tuned, True, cold_share=cold_start)}")


@app.command("evaluate")
def evaluate_bundle(
    bundle: Annotated[Path, typer.Argument(help="bundle folder")],
    int8: Annotated[bool, typer.Option(help="use the int8 user graph")] = False,
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime threads")] = None,
    write: Annotated[bool, typer.Option(help="write docs/results/<dataset>/<variant>-onnx-<precision>.json")] = True,
) -> None:
    """Evaluate an exported bundle through ONNX Runtime (the serving path) on the test split."""
    from index.bundle import BundleError
    from training.evaluation.evaluator import evaluate
    from training.evaluation.report import write_result
    from training.r2end.bundle_scorer import BundleScorer

    try:
        scorer = BundleScorer(bundle, int8=int8, threads=threads)
    except BundleError as exc:
        fail(str(exc))
    ds = load_dataset(scorer.manifest.dataset)
    if ds.split_hash != scorer.manifest.split_hash:
        fail(f"{bundle}: split hash differs from the dataset's ({scorer.manifest.split_hash[:12]} vs {ds.split_hash[:12]})")
    result = evaluate(scorer, ds, "test")
    console.print_json(json.dumps(result.metrics))
    if write:
        notes = f"bundle {scorer.manifest.bundle_version}; user graph {'int8' if int8 else 'fp32'}"
        console.print(f"wrote {write_result(ds, scorer.name, result, config=scorer.manifest.config, notes=notes)}")


@app.command("align")
def align(
    dataset: DatasetOpt = "ml-100k",
    held_out: Annotated[float, typer.Option(help="share of users held out from distillation")] = 0.2,
    data_dir: TeacherDirOpt = None,
) -> None:
    """Alignment of student and teacher embeddings before/after distillation (paper Fig. 4/7)."""
    from training.evaluation.report import results_root
    from training.paths import REPO_ROOT, is_user_dataset
    from training.provenance import stamp
    from training.r2end.alignment import alignment_analysis, plot_alignment
    from training.r2end.config import R2ENDConfig

    ds = load_dataset(dataset)
    result = alignment_analysis(R2ENDConfig(dataset=dataset), ds, held_out, data_dir)
    result.update(stamp())
    out = results_root(dataset) / dataset / "analysis" / "alignment.json"  # beside, not among, the result files
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result) + "\n")
    png = out.with_suffix(".png") if is_user_dataset(dataset) else REPO_ROOT / "docs" / f"alignment-{dataset}.png"
    plot_alignment(result, png, dataset)
    console.print(
        f"cosine {result['before']['cosine_mean']:.4f} -> {result['after']['cosine_mean']:.4f}; "
        f"L2 {result['before']['l2_mean']:.4f} -> {result['after']['l2_mean']:.4f}; wrote {out} and {png}"
    )


@app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def bench(ctx: typer.Context) -> None:
    """Load benchmark: R2END fp32/int8 vs the generative LLM baseline under Locust (args: see --help of scripts/bench_load.py)."""
    from loadtest.bench import main

    main(list(ctx.args))


@app.command("report")
def report(
    dataset: Annotated[str | None, typer.Option(help="a dataset added with `r2end data add`: its own results table")] = None,
) -> None:
    """Regenerate the tables of docs/RESULTS.md and docs/results/<dataset>.md from docs/results/*/*.json (or, with
    --dataset, one added dataset's table)."""
    from training.evaluation.report import load_results, results_root, write_table

    if dataset is not None:
        if not load_results(dataset, results_root(dataset)):
            fail(f"no results of {dataset} in {results_root(dataset) / dataset}: run `r2end train --dataset {dataset}` first")
        path = write_table(dataset, results_root(dataset))
        console.print(path.read_text(), markup=False, highlight=False, soft_wrap=True)
        console.print(f"wrote {path}")
        return
    from training.evaluation.summary import PAPER_DATASETS, write_results_md

    for name in PAPER_DATASETS:  # their per-file tables too: copied result files leave them stale otherwise
        if load_results(name, results_root(name)):
            console.print(f"wrote {write_table(name, results_root(name))}")
    console.print(f"wrote {write_results_md()}")

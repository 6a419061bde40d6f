"""``r2end train | evaluate | ablations | align | serve``: the model commands of the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

console = Console()

VariantOpt = Annotated[str, typer.Option(help="name of this configuration in results and bundles")]


def _config(dataset: str, variant: str, config_file: Path | None, overrides: list[str]):
    from training.r2end.config import R2ENDConfig

    values: dict = {"dataset": dataset, "variant": variant}
    if config_file is not None:
        values.update(json.loads(config_file.read_text()))
    for item in overrides:
        if "=" not in item:
            raise typer.BadParameter(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw
    try:
        return R2ENDConfig(**values)
    except Exception as exc:  # pydantic.ValidationError, with the field and reason
        console.print(f"[red]error:[/red] invalid configuration: {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc


def register(app: typer.Typer, load_dataset) -> None:
    """Add the model commands to the ``r2end`` app (``load_dataset`` turns CLI args into a dataset)."""

    @app.command("train")
    def train(
        dataset: Annotated[str, typer.Option(help="dataset name")] = "ml-100k",
        variant: VariantOpt = "r2end",
        config_file: Annotated[Optional[Path], typer.Option(help="JSON file of R2ENDConfig fields")] = None,
        set_: Annotated[list[str], typer.Option("--set", help="override a config field: key=value (JSON value)")] = [],
        bundle: Annotated[Optional[Path], typer.Option(help="bundle output folder (default $R2END_HOME/bundles/<dataset>/<variant>)")] = None,
        no_export: Annotated[bool, typer.Option("--no-export", help="train and evaluate only")] = False,
        allow_partial: Annotated[bool, typer.Option(help="run even if teacher data is incomplete (results go to $R2END_HOME/runs)")] = False,
        data_dir: Annotated[Optional[Path], typer.Option(help="teacher data folder")] = None,
    ) -> None:
        """Train R2END from cached teacher data, evaluate it, export the bundle."""
        from training.r2end.run import bundle_dir, train_and_report

        config = _config(dataset, variant, config_file, set_)
        ds = load_dataset(dataset, None, None)
        target = None if no_export else (bundle or bundle_dir(dataset, variant))
        try:
            summary = train_and_report(config, ds, data_dir, target, allow_partial, log=console.print)
        except RuntimeError as exc:
            console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
            raise typer.Exit(2) from exc
        console.print_json(json.dumps({k: v for k, v in summary.items()}))

    @app.command("export")
    def export(
        dataset: Annotated[str, typer.Option(help="dataset name")] = "ml-100k",
        variant: VariantOpt = "r2end",
        bundle: Annotated[Optional[Path], typer.Option(help="bundle output folder (default $R2END_HOME/bundles/<dataset>/<variant>)")] = None,
        index: Annotated[str, typer.Option(help="flat (exact) or hnsw (approximate; recall vs exact is measured and stored)")] = "flat",
        int8: Annotated[bool, typer.Option(help="also write the int8 user graph")] = True,
    ) -> None:
        """Export the model `r2end train` left in $R2END_HOME/runs/<dataset>/<variant> as a bundle."""
        from training.export import export_bundle
        from training.r2end.artifacts import load_run
        from training.r2end.run import bundle_dir, run_dir

        folder = run_dir(dataset, variant)
        if not (folder / "run.json").is_file():
            console.print(f"[red]error:[/red] {folder}/run.json: missing; run `r2end train --dataset {dataset} --variant {variant}` first")
            raise typer.Exit(2)
        model, history, meta = load_run(folder)
        ds = load_dataset(dataset, None, None)
        if meta.get("split_hash") and meta["split_hash"] != ds.split_hash:
            console.print(f"[red]error:[/red] {folder}: trained on a different split of {dataset}")
            raise typer.Exit(2)
        target = bundle or bundle_dir(dataset, variant)
        manifest = export_bundle(model, ds, target, metrics=meta["report"].get("metrics", {}), int8=int8, index_kind=index,
                                 history_table=history, history_items=meta.get("history_items", 50), tower=meta.get("tower"))
        console.print_json(json.dumps({"bundle": str(target), **manifest.metrics}))

    @app.command("ablations")
    def ablations(
        dataset: Annotated[str, typer.Option(help="dataset name")] = "ml-100k",
        only: Annotated[Optional[str], typer.Option(help="comma-separated subset of variant names")] = None,
        cold_start: Annotated[float, typer.Option(help="run under the cold-start protocol with this share of items held out")] = 0.0,
        with_baselines: Annotated[bool, typer.Option(help="also run Pop and SASRec-CE (its tuned config) under the same protocol")] = False,
        allow_partial: bool = False,
        data_dir: Optional[Path] = None,
        set_: Annotated[list[str], typer.Option("--set", help="override a base config field: key=value")] = [],
    ) -> None:
        """The paper's Table 2 and the R2END+CF variants, each a config switch, one result file each."""
        from training.r2end.run import ablation_configs, train_and_report

        base = _config(dataset, "r2end", None, set_ + [f"cold_start_share={cold_start}"])
        ds = load_dataset(dataset, None, None)
        suffix = "-cold" if cold_start > 0 else ""
        for config in ablation_configs(base, only.split(",") if only else None):
            config = config.model_copy(update={"variant": config.variant + suffix})
            console.rule(config.variant)
            try:
                summary = train_and_report(config, ds, data_dir, None, allow_partial, log=console.print)
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
        threads: Annotated[Optional[int], typer.Option(help="ONNX Runtime threads")] = None,
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
            console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
            raise typer.Exit(2) from exc
        ds = load_dataset(scorer.manifest.dataset, None, None)
        if ds.split_hash != scorer.manifest.split_hash:
            console.print(f"[red]error:[/red] {bundle}: split hash differs from the dataset's ({scorer.manifest.split_hash[:12]} vs {ds.split_hash[:12]})")
            raise typer.Exit(2)
        result = evaluate(scorer, ds, "test")
        console.print_json(json.dumps(result.metrics))
        if write:
            notes = f"bundle {scorer.manifest.bundle_version}; user graph {'int8' if int8 else 'fp32'}"
            console.print(f"wrote {write_result(ds, scorer.name, result, config=scorer.manifest.config, notes=notes)}")

    @app.command("align")
    def align(
        dataset: Annotated[str, typer.Option(help="dataset name")] = "ml-100k",
        held_out: Annotated[float, typer.Option(help="share of users held out from distillation")] = 0.2,
        data_dir: Optional[Path] = None,
    ) -> None:
        """Alignment of student and teacher embeddings before/after distillation (paper Fig. 4/7)."""
        from training.paths import REPO_ROOT, results_dir
        from training.provenance import stamp
        from training.r2end.alignment import alignment_analysis, plot_alignment
        from training.r2end.config import R2ENDConfig

        ds = load_dataset(dataset, None, None)
        result = alignment_analysis(R2ENDConfig(dataset=dataset), ds, held_out, data_dir)
        result.update(stamp())
        out = results_dir() / dataset / "analysis" / "alignment.json"  # beside, not among, the result files
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result) + "\n")
        png = REPO_ROOT / "docs" / f"alignment-{dataset}.png"
        plot_alignment(result, png, dataset)
        console.print(f"cosine {result['before']['cosine_mean']:.4f} -> {result['after']['cosine_mean']:.4f}; "
                      f"L2 {result['before']['l2_mean']:.4f} -> {result['after']['l2_mean']:.4f}; wrote {out} and {png}")

    @app.command("bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def bench(ctx: typer.Context) -> None:
        """Load benchmark: R2END fp32/int8 vs the generative LLM baseline under Locust (args: see --help of scripts/bench_load.py)."""
        from loadtest.bench import main

        main(list(ctx.args))

    @app.command("report")
    def report() -> None:
        """Regenerate the tables of docs/RESULTS.md from docs/results/*/*.json."""
        from training.evaluation.summary import write_results_md

        console.print(f"wrote {write_results_md()}")

    @app.command("serve")
    def serve(
        bundle: Annotated[Optional[Path], typer.Option(help="bundle folder (or R2END_BUNDLE_PATH)")] = None,
        host: Annotated[Optional[str], typer.Option(help="bind address (or R2END_HOST)")] = None,
        port: Annotated[Optional[int], typer.Option(help="port (or R2END_PORT)")] = None,
    ) -> None:
        """Serve a bundle over HTTP (FastAPI + ONNX Runtime + FAISS; no torch)."""
        from service.main import run
        from service.settings import ServiceSettings

        overrides = {k: v for k, v in {"bundle_path": bundle, "host": host, "port": port}.items() if v is not None}
        run(ServiceSettings(**overrides))

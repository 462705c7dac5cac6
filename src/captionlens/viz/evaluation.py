"""An explanation evaluation (`evaluate.explanations.evaluate_explanations`' result) as a Markdown table,
figures (mean deletion / insertion curves per method, the sanity check's randomisation curve) and an
HTML section for the report."""
from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from captionlens.atomic import atomic_path
from captionlens.evaluate.result import ExplanationEvaluation, HallucinationMeasures, MethodMeasures
from captionlens.evaluate.stats import Rate
from captionlens.evaluate.trust import VERDICT_RULE
from captionlens.explain.registry import method_label
from captionlens.viz.figures import save_figure
from captionlens.viz.report import write_report

TABLE_COLUMNS = (("pointing game", "pointing_game"), ("relevance mass", "relevance_mass"),
                 ("rank accuracy", "relevance_rank"), ("mask AUC", "mask_auc"),
                 ("deletion AUC", "deletion_auc"), ("insertion AUC", "insertion_auc"),
                 ("word disappears", "disappearance_rate"), ("peak offset x", "peak_offset_x"))
BASELINES = (("random", "random map / order"), ("centre", "centre-bias map"),
             ("activation", "activation-energy map (word-blind)"))
VERDICT_COLUMNS = ("method", "sanity", "word randomisation (rank corr.)", "pointing margin over word-blind maps",
                   "deletion selectivity (random region)", "trusted", "why not")


def _rate(measures: MethodMeasures, name: str) -> Rate | None:
    """The rate `name` of `measures` (a `MethodMeasures` field), or None when there is no such rate."""
    rate = getattr(measures, name, None)
    return rate if isinstance(rate, Rate) else None


def _cell(rate: Rate | None) -> str:
    if rate is None or rate.value is None:
        return "–"
    if rate.low is None or rate.high is None:
        return f"{rate.value:.2f}"
    return f"{rate.value:.2f} [{rate.low:.2f}, {rate.high:.2f}]"


def table_rows(evaluation: ExplanationEvaluation) -> list[list[str]]:
    """Header row, then one row per method and one per baseline (random map / order, centre map)."""
    rows = [["method", *(label for label, _ in TABLE_COLUMNS)]]
    for name, measures in evaluation.methods.items():
        rows.append([method_label(name), *(_cell(_rate(measures, key)) for _, key in TABLE_COLUMNS)])
    first = next(iter(evaluation.methods.values()))
    for base, label in BASELINES:
        rows.append([label, *(_cell(_rate(first, f"{key}_{base}")) for _, key in TABLE_COLUMNS)])
    return rows


def _interval(rate: Rate | None) -> str:
    if rate is None or rate.value is None:
        return "–"
    return f"{rate.value:.2f}" + (f" [{rate.low:.2f}, {rate.high:.2f}]" if rate.low is not None else "")


def verdict_rows(evaluation: ExplanationEvaluation) -> list[list[str]]:
    """Header row, then one row per method: each test of `evaluate.trust` with its number, the verdict and why."""
    rows = [list(VERDICT_COLUMNS)]
    for name, m in evaluation.methods.items():
        sanity = m.sanity.verdict + (f" (fails at {m.sanity.failed_at})" if m.sanity.failed_at else "") \
            if m.sanity else "–"
        randomisation = (f"{m.word_randomisation.verdict}: {_interval(m.word_randomisation.spearman)}"
                         if m.word_randomisation else "–")
        margin = (f"{_interval(m.localisation_margin.pointing_game)} vs "
                  f"{m.localisation_margin.baseline.replace('_', '-')}" if m.localisation_margin else "–")
        selectivity = (f"{_interval(m.selectivity.deletion)} ({_num(m.selectivity.deletion_random.value)})"
                       if m.selectivity else "–")
        trusted = "–" if m.verdict is None else ("yes" if m.verdict.trusted else "no")
        why = "; ".join(m.verdict.reasons) if m.verdict is not None else ""
        rows.append([method_label(name), sanity, randomisation, margin, selectivity, trusted, why])
    return rows


def recommendation_sentence(evaluation: ExplanationEvaluation) -> str:
    if evaluation.recommended is None:
        return f"Recommended method: none. {evaluation.recommended_because}."
    return f"Recommended method: {method_label(evaluation.recommended)}. {evaluation.recommended_because}."


def markdown(evaluation: ExplanationEvaluation) -> str:
    """Tables for the README or a run folder: per-method rates, sanity verdicts, hallucination AUCs, insights."""
    data = evaluation.dataset
    lines = [f"{data.images} images, {data.words_scored} words ({data.words_grounded} with a referent); "
             "rates with 95% bootstrap intervals over words", ""]
    lines += _md_table(table_rows(evaluation))
    lines += ["", "| method | sanity verdict | rank correlation after each randomisation step |", "|---|---|---|"]
    rule = None
    for name, measures in evaluation.methods.items():
        sanity = measures.sanity
        curve = ", ".join(f"{step.randomised}: {_num(step.spearman)}" for step in sanity.layers) if sanity else ""
        lines.append(f"| {method_label(name)} | {sanity.verdict if sanity else '–'} | {curve} |")
        rule = rule or (sanity.rule if sanity else None)
    if rule:
        lines += ["", f"Sanity rule: a method {rule}."]
    hallucination = evaluation.hallucination
    if hallucination is not None:
        lines += ["", hallucination_sentence(hallucination), ""]
        stats = sorted({s for table in hallucination.auc.values() for s in table})
        lines += _md_table([["method", *stats]] + [
            [method_label(m), *(_auc(table.get(s), hallucination.auc_intervals.get(m, {}).get(s)) for s in stats)]
            for m, table in hallucination.auc.items()])
    if evaluation.insights:
        lines += [""] + [f"- **{i.claim}.** {i.finding}" for i in evaluation.insights]
    lines += ["", "Can each method be trusted? (rule: a method is " + VERDICT_RULE + ")", ""]
    lines += _md_table(verdict_rows(evaluation))
    lines += ["", recommendation_sentence(evaluation)]
    return "\n".join(lines) + "\n"


def _auc(value: float | None, interval: tuple[float | None, float | None] | None = None) -> str:
    if value is None:
        return "–"
    if interval is None or interval[0] is None or interval[1] is None:
        return f"{value:.2f}"
    return f"{value:.2f} [{interval[0]:.2f}, {interval[1]:.2f}]"


def hallucination_sentence(measures: HallucinationMeasures) -> str:
    sentence = (f"Hallucination: {measures.unsupported} of {measures.words} generated content words are supported "
                f"by no object; the word's log-prob alone separates them with ROC AUC "
                f"{_auc(measures.log_prob_auc, measures.log_prob_auc_interval)}, its image share with "
                f"{_auc(measures.image_share_auc, measures.image_share_auc_interval)}.")
    if measures.rule is not None and measures.held_out is not None:
        held = measures.held_out
        sentence += (f" Suspect-word rule (chosen on even images): {measures.rule.rule.describe()}; on the other "
                     f"images it flags {_auc(held.true_positive_rate, held.true_positive_rate_interval)} of "
                     f"unsupported and {_auc(held.false_positive_rate, held.false_positive_rate_interval)} of "
                     f"supported words (AUC {_num(held.auc)}).")
    return sentence


def _num(value: float | None) -> str:
    return "–" if value is None else f"{float(value):.2f}"


def _md_table(rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])] + \
        ["| " + " | ".join(row) + " |" for row in rows[1:]]


def curves_figure(evaluation: ExplanationEvaluation) -> Figure:
    """Mean deletion and insertion curves (the word's log-prob) per method and for a random order."""
    curves = evaluation.curves
    fig = Figure(figsize=(9, 3.6), dpi=100, layout="constrained")
    for ax, kind, means in zip(fig.subplots(1, 2), ("deletion", "insertion"), (curves.deletion, curves.insertion)):
        for name, values in means.items():
            ax.plot(curves.fraction, [float("nan") if v is None else v for v in values],
                    label="random order" if name == "random" else method_label(name),
                    linestyle="--" if name == "random" else "-", color="grey" if name == "random" else None)
        ax.set(title=f"{kind}: most salient pixels first", xlabel=f"fraction of pixels {kind.rstrip('ion')}ed",
               ylabel="mean log p(word)")
    fig.axes[1].legend(fontsize=8)
    return fig


def sanity_figure(evaluation: ExplanationEvaluation) -> Figure:
    """Rank correlation with the trained model's maps as the model is randomised from the top down."""
    fig = Figure(figsize=(6, 3.6), dpi=100, layout="constrained")
    ax = fig.subplots()
    labels: list[str] = []
    for name, measures in evaluation.methods.items():
        layers = measures.sanity.layers if measures.sanity else ()
        labels = [step.randomised for step in layers]
        ax.plot(range(len(layers)), [float("nan") if step.spearman is None else step.spearman for step in layers],
                marker="o", label=method_label(name))
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set(ylabel="Spearman vs trained maps", title="cascading randomisation (cumulative, top first)",
           ylim=(-0.2, 1.05))
    ax.legend(fontsize=8)
    return fig


def html_section(evaluation: ExplanationEvaluation, figures: Sequence[str]) -> str:
    """The report's evaluation section: the table, the figures (paths relative to the page), the sentences."""
    rows = table_rows(evaluation)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
    parts = ["<section class=\"evaluation\"><h2>Can these maps be trusted?</h2>",
             f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"]
    parts += [f"<img src=\"{html.escape(src)}\" alt=\"evaluation figure\">" for src in figures]
    if evaluation.hallucination is not None:
        parts.append(f"<p>{html.escape(hallucination_sentence(evaluation.hallucination))}</p>")
    if evaluation.insights:
        items = "".join(f"<li><b>{html.escape(i.claim)}.</b> {html.escape(i.finding)}</li>"
                        for i in evaluation.insights)
        parts.append(f"<ul>{items}</ul>")
    verdicts = verdict_rows(evaluation)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in verdicts[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in verdicts[1:])
    parts += ["<h3>Verdict</h3>",
              f"<table class=\"verdict\"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
              f"<p><b>{html.escape(recommendation_sentence(evaluation))}</b></p>"]
    return "".join(parts) + "</section>"


def save_evaluation(evaluation: ExplanationEvaluation, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """`write_evaluation`, and index.html: the report of the explained images with the evaluation as its
    last section."""
    files = write_evaluation(evaluation, out_dir)
    figures = [files["curves"].name, files["sanity"].name]
    files["report"] = write_report(evaluation.explanations, out_dir, title="captionlens: explanation evaluation",
                                   appendix=html_section(evaluation, figures))
    return files


def write_evaluation(evaluation: ExplanationEvaluation, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """evaluation.json, evaluation.md, deletion-insertion.png and sanity.png in `out_dir`, each atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": evaluation.save(out / "evaluation.json"), "markdown": out / "evaluation.md"}
    with atomic_path(files["markdown"]) as tmp:
        tmp.write_text(markdown(evaluation), encoding="utf-8")
    files["curves"] = save_figure(curves_figure(evaluation), out / "deletion-insertion.png")[0]
    files["sanity"] = save_figure(sanity_figure(evaluation), out / "sanity.png")[0]
    return files

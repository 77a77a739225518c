"""Evaluation reports: metrics plus plots, shown inline in Jupyter and saved as JSON and PNG.

A :class:`Report` keeps only small tables (curves thinned to a few thousand points), so it can be
displayed, compared and saved cheaply. :meth:`Report.classification` is built from per-score-range
summaries reduced on the workers (metrics, curve points thinned per range, calibration and score
bins): nothing of the size of the distinct scores reaches the client. :meth:`Report.ranking`
computes all cut-offs together in one pass.
"""

from __future__ import annotations

import base64
import html
import io
import math

import numpy as np
import pandas as pd

from ..errors import ParameterError
from ..schema import IS_FRAUD, ITEM_ID, RANK, SCORE, USER_ID

__all__ = ["ClassificationReport", "RankingReport", "Report"]


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.6g}"
    return str(v)


def _finite(v):
    """Strict JSON: non-finite floats become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


class Report:
    """Metrics and plots of one evaluation; ``_repr_html_`` for notebooks, :meth:`save` for files.

    Build with :meth:`classification` or :meth:`ranking`.

    Attributes
    ----------
    kind : {"classification", "ranking"}
    metrics : dict
        Scalar metrics (JSON-serialisable).
    tables : dict of str -> pandas.DataFrame
        Curves behind the plots (ROC, PR, calibration, score distribution, gain; or metric@k).
    title : str

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"is_fraud": [0, 0, 1, 1], "score": [0.1, 0.4, 0.35, 0.8]})
    >>> r = Report.classification(df)
    >>> r.metrics["roc_auc"]
    0.75
    """

    def __init__(self, kind: str, metrics: dict, tables: dict, title: str | None = None):
        self.kind = kind
        self.metrics = dict(metrics)
        self.tables = dict(tables)
        self.title = title or f"{kind.capitalize()} report"

    def __repr__(self) -> str:
        keys = ", ".join(f"{k}={_fmt(v)}" for k, v in list(self.metrics.items())[:6])
        return f"Report({self.kind!r}, {keys}, ...)"

    # ------------------------------------------------------------------------------------ builders
    @classmethod
    def classification(
        cls,
        df,
        *,
        label: str = IS_FRAUD,
        score: str = SCORE,
        weight: str | None = None,
        amount: str | None = None,
        threshold: float = 0.5,
        target_fpr: float = 0.01,
        title: str | None = None,
        max_points: int = 2000,
        score_ranges="auto",
        passes="auto",
        client=None,
    ) -> Report:
        """Classification report of a scored table (dask or pandas), exact, memory bounded per task.

        Passes over Dask input: one sizing pass and one binning pass (more only when the workers'
        memory needs them), as :func:`classification_metrics`. Each score range is reduced on its
        worker to its metrics' partial sums, its share of the thinned curve points (at most about
        ``max_points`` for the whole curve, plus one per range), and its calibration and score
        distribution bins; the client only concatenates and adds those.

        Parameters
        ----------
        df : DataFrame with the label and score columns
        label, score, weight, amount : str
            Column names (as :func:`classification_metrics`).
        threshold : float
            Alert threshold for precision/recall/F1.
        target_fpr : float
            Adds ``recall@fpr=<target_fpr>``.
        title : str, optional
        max_points : int
            Points kept per curve.
        score_ranges, passes : "auto" (default), int or sequence
            As :func:`classification_metrics`.
        client : distributed.Client, optional

        Notes
        -----
        ``metrics`` adds ``recall@fpr=<target_fpr>``, ``ece`` (expected calibration error over the
        reliability plot's 10 equal-width bins, only when every score is in [0, 1]: see
        :func:`expected_calibration_error`), ``distinct_scores`` (exact), and how the run
        was split: ``score_ranges`` (number of ranges), ``passes`` (binning passes) and
        ``max_range_scores`` (the most distinct scores any one task held).
        """
        from ._calibration import ece_from_bins
        from ._classification import _Source
        from ._curves import _calibration_table, _distribution_table, _gain_table, _pr_table, _roc_table
        from ._histogram import check_threshold, warn_undefined
        from ._ranges import Spec, evaluate

        t = check_threshold(threshold)
        if not 0 <= target_fpr <= 1:
            raise ParameterError(f"target_fpr must be in [0, 1]; got {target_fpr!r}.")
        src = _Source.from_frame(df, label, score, weight, amount)
        spec = Spec(
            threshold=t,
            max_points=max_points,
            calibration_bins=10,
            distribution_bins=50,
            target_fpr=target_fpr,
        )
        res = evaluate(src, spec, score_ranges=score_ranges, passes=passes, client=client)
        m = res["metrics"]
        warn_undefined(m)
        m[f"recall@fpr={target_fpr:g}"] = res["recall_at_fpr"]
        m["distinct_scores"] = res["distinct_scores"]
        m["score_ranges"] = res["n_ranges"]
        m["passes"] = res["passes"]
        m["max_range_scores"] = res["max_range_scores"]
        n, P, N = res["totals"][:3]
        pts = res["points"]
        tables = {
            "roc": _roc_table(pts, P, N, max_points),
            "pr": _pr_table(pts, P, max_points),
            "gain": _gain_table(pts, n, P, max_points),
            "score_distribution": _distribution_table(res["distribution_edges"], *res["distribution"]),
        }
        if m["score_min"] >= 0 and m["score_max"] <= 1:
            tables["calibration"] = _calibration_table(*res["calibration"])
            # the reliability plot's bins (10 of equal width), reduced on the workers
            m["ece"] = ece_from_bins(*res["calibration"][:3])
        return Report("classification", m, tables, title)

    @classmethod
    def ranking(
        cls,
        recs,
        truth,
        *,
        k: int = 10,
        ks=(1, 3, 5, 10, 20),
        user_col: str = USER_ID,
        item_col: str = ITEM_ID,
        rank_col: str = RANK,
        catalog=None,
        train=None,
        title: str | None = None,
        client=None,
    ) -> Report:
        """Ranking report: metrics at ``k`` and metric@k curves over ``ks``, in one pass.

        Parameters as :func:`ranking_metrics` (``train`` adds novelty and popularity bias).

        Examples
        --------
        >>> import pandas as pd
        >>> recs = pd.DataFrame({"user_id": [1, 1], "item_id": [10, 11], "rank": [1, 2]})
        >>> truth = pd.DataFrame({"user_id": [1], "item_id": [11]})
        >>> Report.ranking(recs, truth, k=2, ks=[1]).metrics["hit_rate@2"]
        1.0
        """
        from ._ranking import ranking_metrics_at

        allks = sorted({int(x) for x in ks} | {int(k)})
        at = ranking_metrics_at(
            recs,
            truth,
            ks=allks,
            user_col=user_col,
            item_col=item_col,
            rank_col=rank_col,
            catalog=catalog,
            train=train,
            client=client,
        )
        row = at.loc[int(k)]
        m = {f"{c}@{k}": float(row[c]) for c in at.columns if c != "n_users"}
        m["n_users"] = int(row["n_users"])
        return Report("ranking", m, {"metrics_at_k": at.reset_index()}, title)

    # ------------------------------------------------------------------------------------- figures
    def figures(self) -> dict:
        """Matplotlib figures by name, drawn without pyplot (no global backend change, nothing shown,
        nothing left open); PNGs are rendered by Agg."""
        from matplotlib.figure import Figure

        def fig():
            f = Figure(figsize=(4.2, 3.4), dpi=90, layout="constrained")
            return f, f.add_subplot()

        out = {}
        tb = self.tables
        if self.kind == "classification":
            f, ax = fig()
            ax.plot(tb["roc"]["fpr"], tb["roc"]["tpr"], lw=1.5)
            ax.plot([0, 1], [0, 1], ls=":", c="grey")
            ax.set(
                xlabel="false positive rate",
                ylabel="true positive rate",
                title=f"ROC (AUC {_fmt(self.metrics['roc_auc'])})",
            )
            out["roc"] = f
            f, ax = fig()
            ax.step(tb["pr"]["recall"], tb["pr"]["precision"], where="post", lw=1.5)
            ax.axhline(self.metrics["positive_rate"], ls=":", c="grey")
            ax.set(
                xlabel="recall",
                ylabel="precision",
                ylim=(0, 1.02),
                title=f"Precision-recall (AP {_fmt(self.metrics['pr_auc'])})",
            )
            out["pr"] = f
            if "calibration" in tb:
                f, ax = fig()
                c = tb["calibration"]
                ax.plot([0, 1], [0, 1], ls=":", c="grey")
                ax.plot(c["prob_pred"], c["prob_true"], marker="o", lw=1.5)
                ece = self.metrics.get("ece")
                ax.set(
                    xlabel="mean predicted probability",
                    ylabel="observed positive rate",
                    title="Calibration" if ece is None else f"Calibration (ECE {_fmt(ece)})",
                )
                out["calibration"] = f
            f, ax = fig()
            d = tb["score_distribution"]
            width = (d["right"] - d["left"]).to_numpy()
            for col, color in (("negatives", "tab:blue"), ("positives", "tab:red")):
                tot = d[col].sum()
                dens = d[col] / tot / width if tot > 0 else d[col]
                ax.bar(d["left"], dens, width=width, align="edge", alpha=0.5, color=color, label=col)
            ax.set(xlabel="score", ylabel="density", title="Score distribution")
            ax.legend()
            out["score_distribution"] = f
            f, ax = fig()
            g = tb["gain"]
            ax.plot(g["fraction_alerted"], g["gain"], lw=1.5, label="gain")
            ax.plot([0, 1], [0, 1], ls=":", c="grey")
            ax2 = ax.twinx()
            ax2.plot(g["fraction_alerted"], g["lift"], lw=1, c="tab:orange", label="lift")
            ax2.set_ylabel("lift")
            ax.set(
                xlabel="fraction of rows alerted", ylabel="share of positives caught", title="Gain and lift"
            )
            out["gain"] = f
        else:
            f, ax = fig()
            at = tb["metrics_at_k"]
            for col in (
                "precision",
                "recall",
                "ndcg",
                "map",
                "hit_rate",
                "mrr",
                "coverage",
                "popularity_bias",
            ):
                if col not in at:
                    continue
                ax.plot(at["k"], at[col], marker="o", lw=1.2, label=col)
            ax.set(xlabel="k", ylabel="value", title="Ranking metrics at k")
            ax.legend(fontsize=7, ncol=2)
            out["metrics_at_k"] = f
        return out

    @staticmethod
    def _png(fig) -> bytes:
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue()

    # ------------------------------------------------------------------------------------ outputs
    def to_dict(self) -> dict:
        """JSON-serialisable content: kind, title, metrics and curve tables (as column lists).

        Tables are ``{"columns": [...], "data": [column values, ...]}``. Non-finite numbers (NaN
        metrics, the infinite first ROC threshold) are written as null.
        """
        return {
            "kind": self.kind,
            "title": self.title,
            "metrics": {k: _finite(v) for k, v in self.metrics.items()},
            "tables": {
                k: {
                    "columns": list(v.columns),
                    "data": [[_finite(x) for x in v[c].tolist()] for c in v.columns],
                }
                for k, v in self.tables.items()
            },
        }

    def _repr_html_(self) -> str:
        rows = "".join(
            f"<tr><td style='text-align:left'>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>"
            for k, v in self.metrics.items()
        )
        imgs = "".join(
            f"<img alt='{html.escape(name)}' style='display:inline-block;max-width:32%' "
            f"src='data:image/png;base64,{base64.b64encode(self._png(f)).decode()}'/>"
            for name, f in self.figures().items()
        )
        return (
            f"<div><h4>{html.escape(self.title)}</h4>"
            f"<table><thead><tr><th>metric</th><th>value</th></tr></thead><tbody>{rows}</tbody></table>"
            f"<div>{imgs}</div></div>"
        )

    def save(self, path, *, storage_options: dict | None = None):
        """Write ``report.json`` and one PNG per plot into the directory or URL ``path``.

        Committed as an artifact of kind ``"Report"`` (:mod:`daskml_scale.storage`): a manifest with
        the sha256 of every file, written last; a reader never sees half a report.
        """
        from ..storage import write_artifact, write_json_atomic

        def write(tmp):
            write_json_atomic(tmp / "report.json", self.to_dict())
            for name, f in self.figures().items():
                (tmp / f"{name}.png").write_bytes(self._png(f))

        return write_artifact(
            path, write, kind="Report", metadata={"title": self.title}, storage_options=storage_options
        )

    @classmethod
    def load(cls, path, *, storage_options: dict | None = None) -> Report:
        """Read a report saved by :meth:`save` (metrics and tables; plots are redrawn)."""
        import json

        from ..errors import ArtifactError
        from ..storage import open_artifact

        try:
            with open_artifact(path, kind="Report", storage_options=storage_options) as (_, d):
                d = json.loads((d / "report.json").read_text())
        except ArtifactError as e:
            raise ParameterError(f"{str(path)!r} is not a report written by Report.save: {e}") from None
        tables = {
            k: pd.DataFrame(dict(zip(v["columns"], v["data"]))).astype(float) for k, v in d["tables"].items()
        }
        metrics = {k: (np.nan if v is None else v) for k, v in d["metrics"].items()}
        return Report(d["kind"], metrics, tables, d.get("title"))


class ClassificationReport(Report):
    """:meth:`Report.classification` as a constructor: ``ClassificationReport(df, label=..., score=...)``.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"is_fraud": [0, 0, 1, 1], "score": [0.1, 0.4, 0.35, 0.8]})
    >>> ClassificationReport(df).metrics["roc_auc"]
    0.75
    """

    def __init__(self, df, **kwargs):
        r = Report.classification(df, **kwargs)
        super().__init__(r.kind, r.metrics, r.tables, r.title)


class RankingReport(Report):
    """:meth:`Report.ranking` as a constructor: ``RankingReport(recs, truth, k=10)``."""

    def __init__(self, recs, truth, **kwargs):
        r = Report.ranking(recs, truth, **kwargs)
        super().__init__(r.kind, r.metrics, r.tables, r.title)

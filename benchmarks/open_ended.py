r"""What a freeze could gain in open-ended runs, from their recorded epochs.

An open-ended run (`--reduce_lr_patience`, `--early_stopping_patience`:
Keras's `ReduceLROnPlateau` and `EarlyStopping(restore_best_weights=True)`
end it, not `epochs`) keeps the weights of its best epoch and runs
`early_stopping_patience` epochs after it. For each seed of such a regime in
the result files of `benchmarks/frontier.py`, this prints the epochs the
baseline ran, its best epoch, the epochs after which `ReduceLROnPlateau` cut
the rate (up to the first freeze of the seed's LearnDrop run), the
validation accuracy of the epoch after which it first cut and of the best,
and what the run would have cost had the stem frozen after the best epoch
(no rule can know that epoch while the run goes on: a bound) and after the
second cut (the first point at which a cut has been seen not to help, if
none has since the best).

The rates come from the seed's LearnDrop run: `LearnDrop` samples the rate
at every epoch end before `ReduceLROnPlateau` cuts it, so an evaluation's
mean rate is the mean of the rates of its epoch and the one before, and
until its first freeze a LearnDrop run trains as the baseline does. The
costs are the baseline's own epoch seconds up to the freeze, then one fill
epoch and replay epochs at the ratios to a full epoch measured in the
LearnDrop runs of the files, or of `--costs` (median over the epochs that
replayed the largest stem measured).

Example:

    python -m benchmarks.open_ended \
        --results=benchmarks/results/0.8/holdout_open.jsonl \
        --costs=benchmarks/results/0.7/frontier_open.jsonl
"""

import numpy as np
from absl import app
from absl import flags

from benchmarks import frontier

FLAGS = flags.FLAGS


def define_flags():
    if "results" not in FLAGS:
        flags.DEFINE_list(
            "results", [], "Result files of benchmarks/frontier.py."
        )
    if "costs" not in FLAGS:
        flags.DEFINE_list(
            "costs",
            [],
            "Result files whose LearnDrop runs give the fill and replay "
            "costs (default: each of --results its own).",
        )


def epoch_rates(evaluations):
    """Each epoch's learning rate from the evaluations' mean rates.

    Valid for one evaluation per epoch with the rate sampled at epoch ends
    only (the default's `samples_per_epoch=1`).
    """
    rates = []
    for evaluation in evaluations:
        mean = evaluation["learning_rate"]
        rates.append(mean if not rates else 2 * mean - rates[-1])
    return rates


def cuts(rates):
    """Epochs (from 1) after which the rate fell."""
    return [e for e in range(1, len(rates)) if rates[e] < 0.99 * rates[e - 1]]


def stem_sizes(row):
    """The stem's size during each epoch of a LearnDrop run (from 1)."""
    frozen = sorted(row["frozen_after_epoch"].values())
    return [sum(f < e for f in frozen) for e in range(1, row["epochs_run"] + 1)]


def _epochs_as_baseline(row):
    """Epochs a LearnDrop run trained as its baseline: to its first freeze."""
    return min(frontier.first_freeze(row), row["epochs_run"])


def cost_ratios(rows):
    """Median (fill, replay) epoch seconds over the same run's full epochs.

    Replay: the epochs that replayed the largest stem of any run.
    """
    runs = [r for r in rows if r["setting"] != frontier.BASELINE and r["modes"]]
    largest = max((max(stem_sizes(r)) for r in runs), default=0)
    fills, replays = [], []
    for row in runs:
        seconds = np.asarray(row["epoch_seconds"])
        modes = row["modes"]
        full = np.median(
            [s for s, m in zip(seconds[1:], modes[1:]) if m == "full"]
        )
        sizes = stem_sizes(row)
        for s, m, size in zip(seconds, modes, sizes):
            if m == "fill":
                fills.append(s / full)
            elif m == "replay" and size == largest:
                replays.append(s / full)
    if not fills or not replays:
        return None
    return float(np.median(fills)), float(np.median(replays)), largest


def freeze_cost(seconds, after, fill, replay):
    """Seconds of a run whose stem freezes after epoch `after` (from 1)."""
    seconds = np.asarray(seconds)
    if after >= len(seconds):
        return float(seconds.sum())
    full = float(np.median(seconds[1:]))
    rest = len(seconds) - after - 1
    return float(seconds[:after].sum() + fill * full + rest * replay * full)


def report(rows, cost_rows=None):
    """Returns the table's lines for every open-ended regime in `rows`.

    The fill and replay costs come from the LearnDrop runs of `cost_rows`
    (those of each regime in `rows` when `None`).
    """
    lines = []
    regimes = sorted(
        {
            r["regime"]
            for r in rows
            if r["config"].get("early_stopping_patience")
        }
    )
    for regime in regimes:
        mine = [r for r in rows if r["regime"] == regime]
        ratios = cost_ratios(mine if cost_rows is None else cost_rows)
        if ratios is None:
            lines.append(f"{regime}: no LearnDrop run filled and replayed")
            continue
        fill, replay, largest = ratios
        lines += [
            f"## {regime}: fill {fill:.2f}, replay of {largest} units "
            f"{replay:.2f} of a full epoch",
            "",
            "| seed | epochs | best | rate cut after | val at the first "
            "cut, at the best | baseline | freeze after the best | after the "
            "second cut |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for base in sorted(
            (r for r in mine if r["setting"] == frontier.BASELINE),
            key=lambda r: r["seed"],
        ):
            runs = [
                r
                for r in mine
                if r["seed"] == base["seed"]
                and r["setting"] != frontier.BASELINE
            ]
            if not runs:
                continue
            # The LearnDrop run that froze last trained as the baseline
            # longest; its rates are the baseline's up to its first freeze.
            run = max(runs, key=_epochs_as_baseline)
            known = _epochs_as_baseline(run)
            cut = [
                c for c in cuts(epoch_rates(run["evaluations"])) if c <= known
            ]
            accuracy = base["val_accuracy_per_epoch"]
            best = base["final_epoch"]
            total = float(np.sum(base["epoch_seconds"]))
            cells = [
                str(base["seed"]),
                str(base["epochs_run"]),
                str(best),
                ", ".join(map(str, cut)),
                (
                    f"{100 * accuracy[cut[0] - 1]:.2f} %, "
                    f"{100 * accuracy[best - 1]:.2f} %"
                )
                if cut
                else "-",
                f"{total:.1f} s",
            ]
            for after in (best, cut[1] if len(cut) > 1 else None):
                if after is None:
                    cells.append("-")
                    continue
                cost = freeze_cost(base["epoch_seconds"], after, fill, replay)
                cells.append(f"{cost:.1f} s, {total / cost:.2f}x")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def main(argv):
    del argv
    cost_rows = frontier.read_results(FLAGS.costs) if FLAGS.costs else None
    for path in FLAGS.results:
        print(f"# {path}\n")
        print("\n".join(report(frontier.read_results([path]), cost_rows)))


if __name__ == "__main__":
    define_flags()
    app.run(main)

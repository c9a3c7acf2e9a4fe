r"""What each unit's features do while a model trains, before any freezing.

One run per regime and seed trains with a `LearnDrop` that never freezes
(`FixedSchedule({})`), which records at every epoch end each unit's weight
change and its drift on the probe set (`keras_learndrop.drift`, features
pooled to a 4 x 4 grid). Beside it, `DriftObserver` measures on the same
probe inputs what the choice of features and of signal changes:

* `drift_flat`: the drift of the whole feature map, not pooled;
* `drift_global`: of the features averaged over all positions;
* `own_drift`: a unit's own change, `1 - CKA` of its output on its
  current input with its current weights against its weights of the last
  epoch. The drift of the unit's output includes the change of its input;
  this one does not, so it does not fall when the units before it freeze;
* `plasticity`: Egeria's signal (Wang et al., EuroSys 2023), the relative
  squared distance `||f_u(x; w_e) - f_u(x; w_{e-lag})||^2 /
  ||f_u(x; w_{e-lag})||^2` of a unit's output to that of a copy of the
  model `--lag` epochs behind;
* `cka_to_final`: CKA of each epoch's features with the last epoch's (how
  far from its final representation a unit still is).

Each finished run is appended to `--results` (JSON lines; a rerun skips
what the file holds). `--report` prints the table and draws the plot.

Example (see benchmarks/reproduce.sh for those of docs/results.md):

    python -m benchmarks.observe_drift --dataset=shared:cifar10 \
        --image_size=32 --width=0.5 --model=resnet20 --epochs=30 \
        --seeds=0 --regime=resnet20 --results=outputs/observe_drift.jsonl
    python -m benchmarks.observe_drift --report \
        --results=outputs/observe_drift.jsonl --plot=outputs/drift.png
"""

import collections
import time

import numpy as np
from absl import app
from absl import flags
from absl import logging
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from benchmarks import frontier
from examples import train
from keras_learndrop import drift
from keras_learndrop import graph
from keras_learndrop.backend import keras
from keras_learndrop.backend import tf

FLAGS = flags.FLAGS


def define_flags():
    """The frontier's flags, and the lag of the plasticity's copy."""
    frontier.define_flags()
    if "lag" not in FLAGS:
        flags.DEFINE_integer(
            "lag",
            3,
            "Epochs the copy of the model for Egeria's plasticity lags.",
        )


class DriftObserver(keras.callbacks.Callback):
    """Records the variants of the drift and Egeria's plasticity.

    Args:
        probe: NumPy array of the probe inputs (as `LearnDrop` draws them).
        lag: Integer >= 1. Epochs the copy for the plasticity lags.
    """

    def __init__(self, probe, lag):
        super().__init__()
        self.probe = probe
        self.lag = lag
        self.records = []
        self._grams = []

    def on_train_begin(self, logs=None):
        self._chain = graph.UnitChain(self.model)
        self._flat = drift.DriftTracker(self._chain, self.probe, grid=None)
        self._global = drift.DriftTracker(self._chain, self.probe, grid=1)
        self._pooled = drift.DriftTracker(self._chain, self.probe)
        for tracker in (self._flat, self._global, self._pooled):
            tracker.measure()
        self._copy = keras.models.clone_model(self.model)
        self._copy_chain = graph.UnitChain(self._copy)
        self._last = keras.models.clone_model(self.model)
        self._last.set_weights(self.model.get_weights())
        self._last_chain = graph.UnitChain(self._last)
        self._weights = collections.deque([self.model.get_weights()])

    def on_epoch_end(self, epoch, logs=None):
        record = {
            "epoch": epoch,
            "drift_flat": _floats(self._flat.measure()),
            "drift_global": _floats(self._global.measure()),
        }
        self._pooled.measure()
        record["own_drift"] = _floats(self._own_drift())
        self._last.set_weights(self.model.get_weights())
        self._grams.append(self._pooled.grams)
        self._weights.append(self.model.get_weights())
        if len(self._weights) > self.lag + 1:
            self._weights.popleft()
        self._copy.set_weights(self._weights[0])
        record["plasticity"] = _floats(self._plasticity())
        record["plasticity_lag"] = len(self._weights) - 1
        self.records.append(record)

    def on_train_end(self, logs=None):
        final = self._grams[-1]
        for record, grams in zip(self.records, self._grams):
            record["cka_to_final"] = _floats(
                drift.cka(g, f) for g, f in zip(grams, final)
            )

    def _own_drift(self):
        x = tf.cast(tf.constant(self.probe), self._chain.input.dtype)
        values = []
        for unit in range(len(self._chain)):
            now = self._chain.forward(x, unit, unit + 1, training=False)
            last = self._last_chain.forward(x, unit, unit + 1, training=False)
            values.append(
                1.0
                - drift.cka(
                    drift.gram(drift.pooled_features(now).numpy()),
                    drift.gram(drift.pooled_features(last).numpy()),
                )
            )
            x = now
        return values

    def _plasticity(self):
        x = tf.cast(tf.constant(self.probe), self._chain.input.dtype)
        now, before = x, x
        values = []
        for unit in range(len(self._chain)):
            now = self._chain.forward(now, unit, unit + 1, training=False)
            before = self._copy_chain.forward(
                before, unit, unit + 1, training=False
            )
            a = tf.cast(tf.reshape(now, (len(self.probe), -1)), tf.float64)
            b = tf.cast(tf.reshape(before, (len(self.probe), -1)), tf.float64)
            values.append(
                float(tf.reduce_sum((a - b) ** 2) / tf.reduce_sum(b**2))
            )
        return values


def _floats(values):
    return [None if not np.isfinite(v) else float(v) for v in values]


def observe(config, data, seeds, regime, results_path, lag):
    """Runs the observations `results_path` does not hold; returns its rows."""
    done = {
        (row["regime"], row["seed"])
        for row in frontier.read_results([results_path])
    }
    for seed in seeds:
        if (regime, seed) in done:
            continue
        probe = drift.draw_probe(
            data.x_val, drift.DEFAULT_PROBE_SIZE, seed=seed
        )
        observer = DriftObserver(probe, lag)
        started = time.time()
        result = train.run(
            config,
            data=data,
            callbacks=[observer],
            seed=seed,
            learn_drop=True,
            policy="fixed",
            policy_args="",
            schedule="",
        )
        report = result["learn_drop"]
        row = train.to_json(
            {
                "regime": regime,
                "seed": seed,
                "started": started,
                "unit_names": report["unit_names"],
                "unit_flops": report["unit_flops"],
                "fit_seconds": result["fit_seconds"],
                "val_accuracy": result["val_accuracy"],
                "val_accuracy_per_epoch": result["history"].get("val_accuracy"),
                "epoch_seconds": [e["seconds"] for e in report["epochs"]],
                "drift_seconds": [e["drift_seconds"] for e in report["epochs"]],
                "learning_rate": [
                    e["learning_rate"] for e in report["evaluations"]
                ],
                "change": [e["change"] for e in report["evaluations"]],
                "drift": [e["drift"] for e in report["evaluations"]],
                "observed": observer.records,
                "config": result["config"],
            }
        )
        line = (
            f"{regime} seed {seed}: fit {row['fit_seconds']:.1f} s, val "
            f"{100 * row['val_accuracy']:.2f} %, drift "
            f"{100 * sum(row['drift_seconds']) / row['fit_seconds']:.2f} % "
            "of the fit"
        )
        logging.info("%s", line)
        print(line, flush=True)
        frontier.append_result(results_path, row)
    return frontier.read_results([results_path])


def first_epoch_below(values, threshold, patience=2):
    """The first epoch (from 1) after which `values` stay below `threshold`
    for `patience` epochs in a row; `None` if never."""
    streak = 0
    for epoch, value in enumerate(values):
        streak = streak + 1 if value is not None and value < threshold else 0
        if streak >= patience:
            return epoch + 1
    return None


def format_table(rows):
    """One block per run: per unit, the drift and plasticity by epoch."""
    lines = []
    for row in rows:
        names = row["unit_names"]
        epochs = len(row["drift"])
        shown = sorted({0, 1, 2, 4, 7, 11, 15, 19, 24, epochs - 1})
        shown = [e for e in shown if e < epochs]
        lines.append(
            f"## {row['regime']} seed {row['seed']}: val "
            f"{100 * row['val_accuracy']:.2f} %, probe "
            f"{100 * sum(row['drift_seconds']) / row['fit_seconds']:.2f} % "
            "of the fit"
        )
        lines.append(
            "drift (1 - CKA, 4x4 grid) x 1000 by epoch "
            + " ".join(f"{e + 1:>6}" for e in shown)
            + " | rel@ep5  cka>0.9"
        )
        lr = row["learning_rate"]
        lines.append(
            f"{'learning rate x 1000':<40}"
            + " ".join(f"{1000 * (lr[e] or 0):>6.1f}" for e in shown)
        )
        for unit, name in enumerate(names):
            values = [row["drift"][e][unit] for e in shown]
            at = min(4, epochs - 1)
            relative = drift.relative_drift(
                [np.nan if v is None else v for v in row["drift"][at]]
            )[unit]
            cka_final = [r["cka_to_final"][unit] for r in row["observed"]]
            settle = next(
                (i + 1 for i, c in enumerate(cka_final) if c and c > 0.9),
                None,
            )
            lines.append(
                f"{name[:39]:<40}"
                + " ".join(
                    "     -" if v is None else f"{1000 * v:>6.2f}"
                    for v in values
                )
                + f" | {relative:>7.2f} {settle!s:>8}"
            )
        if "own_drift" in row["observed"][0]:
            lines.append("own drift (1 - CKA, same input) x 1000")
            for unit, name in enumerate(names):
                values = [row["observed"][e]["own_drift"][unit] for e in shown]
                lines.append(
                    f"{name[:39]:<40}"
                    + " ".join(
                        "     -" if v is None else f"{1000 * v:>6.2f}"
                        for v in values
                    )
                )
        lines.append("")
    return "\n".join(lines)


def plot(rows, path):
    """Drift (and plasticity) per unit per epoch, one column per run."""
    figure = Figure(figsize=(4.5 * len(rows), 7.5))
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, len(rows), squeeze=False)
    for column, row in enumerate(rows):
        names = row["unit_names"]
        colors = colormaps["viridis"](np.linspace(0, 0.9, len(names)))
        epochs = np.arange(1, len(row["drift"]) + 1)
        for unit, color in enumerate(colors):
            series = [_nan(e[unit]) for e in row["drift"]]
            axes[0, column].semilogy(epochs, series, color=color, lw=1)
            plastic = [_nan(r["plasticity"][unit]) for r in row["observed"]]
            axes[1, column].semilogy(epochs, plastic, color=color, lw=1)
        axes[0, column].set_title(f"{row['regime']} (seed {row['seed']})")
        axes[0, column].set_ylabel("drift 1 - CKA")
        axes[1, column].set_ylabel(f"plasticity (lag {FLAGS.lag})")
        axes[1, column].set_xlabel("epoch (dark: first unit, light: last)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def _nan(value):
    return np.nan if value is None else value


def main(argv):
    del argv
    frontier.use_threads()
    if FLAGS.report:
        rows = frontier.read_results(FLAGS.results)
        print(format_table(rows))
        if FLAGS.plot:
            plot(rows, FLAGS.plot)
        return
    config, data = frontier.config_and_data(learn_drop=True)
    observe(
        config,
        data,
        [int(s) for s in FLAGS.seeds],
        FLAGS.regime,
        FLAGS.results[0],
        FLAGS.lag,
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)

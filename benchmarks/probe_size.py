r"""How many probe inputs the drift needs: its error against a larger probe.

The probe's cost grows with its size `n` (one inference pass of the head
over `n` inputs per evaluation), so a small training set wants a small
probe. This measures what a smaller probe loses. One run trains a model
(no freezing) and, at every epoch end, takes each unit's Gram matrix on
`--reference_size` probe inputs. The drift of every unit between two
epochs is then computed on the whole probe (the reference) and on
`--draws` random subsets of each size in `--sizes`: a subset's Gram
matrix is a block of the whole one, so every size sees the same network at
the same epochs. Reported per size: the median and 90th percentile of the
absolute error against the reference, over every unit, epoch and draw
whose reference drift is at most `--near` (where a freeze is decided).

Example (see benchmarks/reproduce.sh for those of docs/results.md):

    python -m benchmarks.probe_size --dataset=shared:cifar10 \
        --image_size=32 --width=0.5 --model=resnet20 --epochs=12 \
        --seeds=0 --regime=resnet20 --results=outputs/probe_size.jsonl
    python -m benchmarks.probe_size --report --results=outputs/probe_size.jsonl
"""

import time

import numpy as np
from absl import app
from absl import flags

from benchmarks import frontier
from examples import train
from keras_learndrop import drift
from keras_learndrop import graph
from keras_learndrop.backend import keras

FLAGS = flags.FLAGS


def define_flags():
    """The frontier's flags, and the sizes compared."""
    frontier.define_flags()
    if "reference_size" in FLAGS:
        return
    flags.DEFINE_integer(
        "reference_size", 512, "Probe inputs of the reference drift."
    )
    flags.DEFINE_list(
        "sizes", ["32", "64", "128", "256"], "Probe sizes compared."
    )
    flags.DEFINE_integer("draws", 20, "Random subsets per size and epoch.")
    flags.DEFINE_bool(
        "time_cuts",
        False,
        "Instead of training: time an evaluation at each cut of the "
        "untrained model, the first one there (with any tracing) and the "
        "next (printed, not saved).",
    )
    flags.DEFINE_integer("probe_inputs", 125, "Probe inputs of --time_cuts.")
    flags.DEFINE_float(
        "near",
        0.05,
        "Errors are reported where the reference drift is at most this.",
    )


class GramRecorder(keras.callbacks.Callback):
    """Compares each epoch's drift on probe subsets with the whole probe.

    Args:
        probe: NumPy array of the reference probe inputs.
        sizes: Probe sizes to compare, each below `len(probe)`.
        draws: Random subsets per size and epoch.
        seed: Seed of the subsets.
    """

    def __init__(self, probe, sizes, draws, seed):
        super().__init__()
        self.probe = probe
        self.sizes = sizes
        self.draws = draws
        self.rng = np.random.default_rng(seed)
        self.records = []
        self.seconds = []

    def on_train_begin(self, logs=None):
        self._tracker = drift.DriftTracker(
            graph.UnitChain(self.model), self.probe
        )
        self._last = self._tracker.current_grams()

    def on_epoch_end(self, epoch, logs=None):
        grams = self._tracker.current_grams()
        n = len(self.probe)
        record = {"epoch": epoch, "reference": [], "subsets": {}}
        for size in self.sizes:
            subsets = [
                np.sort(self.rng.choice(n, size, replace=False))
                for _ in range(self.draws)
            ]
            record["subsets"][str(size)] = [
                [
                    1.0 - drift.cka(a[np.ix_(s, s)], b[np.ix_(s, s)])
                    for s in subsets
                ]
                for a, b in zip(self._last, grams)
            ]
        record["reference"] = [
            1.0 - drift.cka(a, b) for a, b in zip(self._last, grams)
        ]
        for size in (*self.sizes, n) if epoch % 4 == 0 else ():
            tracker = drift.DriftTracker(self._tracker.chain, self.probe[:size])
            tracker.current_grams()  # traces
            start = time.perf_counter()
            tracker.current_grams()
            self.seconds.append([size, time.perf_counter() - start])
        self.records.append(record)
        self._last = grams


def measure(config, data, seeds, regime, results_path):
    """Runs the seeds `results_path` does not hold; returns its rows."""
    done = {
        (row["regime"], row["seed"])
        for row in frontier.read_results([results_path])
    }
    sizes = [int(s) for s in FLAGS.sizes]
    for seed in seeds:
        if (regime, seed) in done:
            continue
        probe = drift.draw_probe(data.x_val, FLAGS.reference_size, seed=seed)
        recorder = GramRecorder(probe, sizes, FLAGS.draws, seed)
        result = train.run(
            config,
            data=data,
            callbacks=[recorder],
            seed=seed,
            learn_drop=False,
        )
        row = train.to_json(
            {
                "regime": regime,
                "seed": seed,
                "reference_size": len(probe),
                "train_samples": len(data.x_train),
                "epoch_seconds": result["epoch_seconds"],
                "val_accuracy": result["val_accuracy"],
                "probe_seconds": recorder.seconds,
                "records": recorder.records,
                "config": result["config"],
            }
        )
        frontier.append_result(results_path, row)
        print(format_table([row]), flush=True)
    return frontier.read_results([results_path])


def time_cuts(model, probe):
    """Seconds of the first and the next evaluation at each cut, in turn.

    The stem grows one unit at a time, as a policy grows it: the first
    evaluation at a new cut is what a growth costs the probe.
    """
    tracker = drift.DriftTracker(graph.UnitChain(model), probe)
    rows = []
    for cut in range(len(tracker.chain)):
        start = time.perf_counter()
        tracker.set_cut(cut)
        tracker.measure()
        first = time.perf_counter() - start
        start = time.perf_counter()
        tracker.measure()
        rows.append((cut, first, time.perf_counter() - start))
    return rows


def errors(row, near, relative=False):
    """Per size: the errors where the reference drift is in `(0, near]`.

    Absolute, or with `relative` divided by the reference drift.
    """
    out = {}
    for record in row["records"]:
        reference = record["reference"]
        for size, per_unit in record["subsets"].items():
            for ref, values in zip(reference, per_unit):
                if ref is None or not 0 < ref <= near:
                    continue
                out.setdefault(int(size), []).extend(
                    abs(v - ref) / (ref if relative else 1.0) for v in values
                )
    return out


def format_table(rows, near=0.05):
    """The error of each probe size, and its cost, per run."""
    lines = []
    for row in rows:
        n = row["reference_size"]
        lines.append(
            f"## {row['regime']} seed {row['seed']}: "
            f"{row['train_samples']} training images, errors against "
            f"{n} probe inputs where the drift is <= {near}"
        )
        lines.append(
            "| probe | median error | 90th pct | median relative error | "
            "90th pct | pairs | probe seconds (median) |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        seconds = {}
        for size, value in row["probe_seconds"]:
            seconds.setdefault(size, []).append(value)
        found = errors(row, near)
        relative = errors(row, near, relative=True)
        for size in sorted(found):
            values, ratios = np.array(found[size]), np.array(relative[size])
            lines.append(
                f"| {size} | {np.median(values):.4f} | "
                f"{np.percentile(values, 90):.4f} | "
                f"{100 * np.median(ratios):.0f} % | "
                f"{100 * np.percentile(ratios, 90):.0f} % | {len(values)} | "
                f"{np.median(seconds.get(size, [np.nan])):.3f} |"
            )
        lines.append(
            f"| {n} (reference) | - | - | - | - | - | "
            f"{np.median(seconds.get(n, [np.nan])):.3f} |"
        )
        lines.append(
            f"epoch seconds (median): {np.median(row['epoch_seconds']):.2f}"
        )
        lines.append("")
    return "\n".join(lines)


def main(argv):
    del argv
    frontier.use_threads()
    if FLAGS.report:
        print(format_table(frontier.read_results(FLAGS.results), FLAGS.near))
        return
    config, data = frontier.config_and_data(learn_drop=False)
    if FLAGS.time_cuts:
        model = train.build_model(config, data, total_steps=1)
        probe = drift.draw_probe(data.x_val, FLAGS.probe_inputs, seed=0)
        print("| cut | first evaluation (s) | next (s) |\n|---|---|---|")
        for cut, first, then in time_cuts(model, probe):
            print(f"| {cut} | {first:.3f} | {then:.3f} |")
        return
    measure(
        config,
        data,
        [int(s) for s in FLAGS.seeds],
        FLAGS.regime,
        FLAGS.results[0],
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)

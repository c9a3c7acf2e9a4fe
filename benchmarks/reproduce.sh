#!/usr/bin/env bash
# Every figure of docs/results.md (and the README's table), in the order
# they were run there:
# bash benchmarks/reproduce.sh [name ...]   (names: observe frontier-resnet20
# frontier-finetune frontier-vgg11 frontier-augment frontier-dropout
# frontier-report v04-resnet20 v04-finetune v04-augment v04-holdout
# v04-vgg11-augment v04-vgg11 v05-seeds v04-report augment-pipeline
# transfer-learning v06-observe v06-observe-report v06-resnet20
# v06-finetune v06-vgg11 v06-open v06-report v07-finetune v07-finetune-b
# v07-finetune-holdout v07-open v07-open-b v07-dropout v07-resnet50
# v07-report v08-own-drift v08-probe-size v08-overhead v08-overhead-rerun
# v08-holdout-resnet20 v08-finetune v08-holdout-dropout v08-holdout-vgg11
# v08-holdout-open v08-holdout-augment v08-holdout-resnet50
# v08-open-analysis v08-report growth growth-batch32 resnet20 vgg11 mnist
# replay jit deep). Results go to outputs/<name>/; the frontier's runs to
# benchmarks/results/ (resumed where a run stopped). The setting `default`
# is LearnDrop's default of the version that runs it:
# `LearnDropScores.default()` (also
# `--setting=scores:last_unit_threshold=0.02,freeze_augmented=False`),
# except in v07-dropout and v07-resnet50, run while the default was
# `ScheduleOrDrift()` (their notes say that it chose the scores).
source "$(dirname "$0")/../scripts/env.sh"
CIFAR=(--dataset=shared:cifar10 --image_size=32 --max_train=10000
       --batch_size=128)
# The frontier: half-width models on a tuning split of CIFAR-10's training
# images (4,000 to train, 2,000 to validate), one thread pinned to one core
# so that nothing else on the machine shares the timed job's core.
# Its runs so far validate the whole model after the freeze (made before
# validation on cached features), so the regimes keep --nocache_validation
# for speed-ups that compare with each other; resnet20-dropout, run later,
# caches it.
FRONTIER=(--dataset=shared:cifar10 --image_size=32 --width=0.5
          --batch_size=128 --seeds=0,1 --tune_train=4000 --tune_val=2000
          --threads=1)
WHOLE_VALIDATION=(--nocache_validation)
# `aggressive()` was threshold 0.5 until version 0.5 (threshold 0.7 since).
SETTINGS=(--setting=scores --setting=scores:threshold=0.5
          --setting=scores:relative=False
          --setting=scores:threshold=0.5,relative=False
          --setting=scores:threshold=1.0,relative=False
          --setting=consistency:threshold=0.5
          --setting=autofreeze --setting=freezeout --setting=freezeout:t0=0.5)
RESULTS=benchmarks/results
# Version 0.4 (one trace per step and cut, validation on cached features):
# the default against fresh baselines, FreezeOut and AutoFreeze's rule, in
# the library's own configuration (no --nocache_validation).
V04="$RESULTS/0.4"
COMPARE=(--setting=default --setting=freezeout --setting=autofreeze
         --setting=scores:threshold=0.5 --setting=aggressive)
PRETRAINED=outputs/pretrain/resnet20_w0.5_classes0-4.weights.h5
# CORE=1 bash benchmarks/reproduce.sh ... pins a second timed job to core 1.
frontier() {
  taskset -c "${CORE:-0}" python -m benchmarks.frontier "${FRONTIER[@]}" "$@"
}
V07="$RESULTS/0.7"
V08="$RESULTS/0.8"
probe_size() {
  taskset -c "${CORE:-0}" python -m benchmarks.probe_size "${FRONTIER[@]}" \
    --seeds=0 --results="$V08/probe_size.jsonl" "$@"
}
# LearnDrop's cost in full epochs: the baseline and a LearnDrop that never
# freezes (`observe`), in turn, 4 epochs each, 3 seeds; results to "$1".
overhead() {
  frontier --model=resnet20 --epochs=4 --regime=overhead --setting=observe \
    --seeds="${SEEDS:-0,1,2}" --results="$1"
}
# What a growth of the stem costs: ResNet-20 at half width on 4,000 images
# trained with a fixed freeze plan, one core, one thread; the epochs'
# seconds are in its output.
growth_plan() {
  TF_NUM_INTRAOP_THREADS=1 TF_NUM_INTEROP_THREADS=1 taskset -c "${CORE:-0}" \
    python -m examples.train --model=resnet20 --width=0.5 \
    --dataset=shared:cifar10 --image_size=32 --max_train=4000 \
    --max_val=2000 --policy=fixed --verbose=0 "$@"
}
# Version 0.6: each unit's drift on the probe set (benchmarks/observe_drift.py).
V06="$RESULTS/0.6"
DRIFT=(--setting=drift:threshold=0.02 --setting=drift:threshold=0.05
       --seeds="${SEEDS:-0,1}")
observe_drift() {
  taskset -c 0 python -m benchmarks.observe_drift "${FRONTIER[@]}" --seeds=0 \
    --results="$V06/observe_drift.jsonl" "$@"
}
# Pre-trained on classes 0-4 (airplane ... deer), fine-tuned on 5-9.
# 10,045 images of 0-4 leave a last batch of odd size, which crashes
# oneDNN's kernels (see examples/train.py): pre-train without them.
pretrain() {
  [ -f "$PRETRAINED" ] || TF_ENABLE_ONEDNN_OPTS=0 taskset -c 0 python -m examples.train \
         --dataset=shared:cifar10 --image_size=32 --model=resnet20 \
         --width=0.5 --classes=0-4 --max_train=20000 --epochs=15 \
         --batch_size=128 --nolearn_drop --verbose=0 \
         --save_weights="$PRETRAINED" --output_dir=outputs/pretrain
}
run() {
  case "$1" in
    observe) frontier --model=resnet20 --epochs=30 --seeds=0 \
             --regime=resnet20-w0.5 --setting=observe --nobaseline \
             --results="$RESULTS/observe.jsonl" ;;
    frontier-resnet20) frontier --model=resnet20 --epochs=30 \
             --regime=resnet20 "${WHOLE_VALIDATION[@]}" "${SETTINGS[@]}" \
             --results="$RESULTS/frontier_resnet20.jsonl" ;;
    frontier-finetune)
      pretrain
      frontier --model=resnet20 --classes=5-9 --init_weights="$PRETRAINED" \
             --epochs=15 --learning_rate=0.01 --regime=finetune \
             "${WHOLE_VALIDATION[@]}" \
             "${SETTINGS[@]}" --results="$RESULTS/frontier_finetune.jsonl" ;;
    frontier-vgg11) frontier --model=vgg11 --epochs=30 --regime=vgg11 \
             "${WHOLE_VALIDATION[@]}" \
             "${SETTINGS[@]}" --results="$RESULTS/frontier_vgg11.jsonl" ;;
    frontier-augment) frontier --model=resnet20 --epochs=30 --augment \
             "${WHOLE_VALIDATION[@]}" --regime=resnet20-augment \
             --setting=scores@augmented_views=2 "${SETTINGS[@]}" \
             --results="$RESULTS/frontier_resnet20_augment.jsonl" ;;
    frontier-dropout) frontier --model=resnet20 --epochs=30 --dropout=0.1 \
             --regime=resnet20-dropout --setting=scores@stem_dropout=train \
             --setting=scores@stem_dropout=inference \
             --results="$RESULTS/frontier_resnet20_dropout.jsonl" ;;
    # With a fixed plan (3, 5, then 8 units after 40, 50 and 60 % of the
    # run).
    v04-resnet20) frontier --model=resnet20 --epochs=30 --regime=resnet20 \
             "${COMPARE[@]}" --setting=fixed:12:3,15:5,18:8 \
             --results="$V04/frontier_resnet20.jsonl" ;;
    v04-finetune) frontier --model=resnet20 --classes=5-9 \
             --init_weights="$PRETRAINED" --epochs=15 --learning_rate=0.01 \
             --regime=finetune "${COMPARE[@]}" \
             --results="$V04/frontier_finetune.jsonl" ;;
    # With augmentation the default of version 0.4 (since 0.5 the default
    # does not freeze under augmentation).
    v04-augment) frontier --model=resnet20 --epochs=30 --augment \
             --regime=resnet20-augment --setting=scores:last_unit_threshold=0.02 \
             --setting=aggressive \
             --results="$V04/frontier_resnet20_augment.jsonl" ;;
    v04-vgg11-augment) frontier --model=vgg11 --epochs=30 --augment \
             --regime=vgg11-augment --setting=scores:last_unit_threshold=0.02 \
             --results="$V04/frontier_vgg11_augment.jsonl" ;;
    v04-vgg11) frontier --model=vgg11 --epochs=30 --regime=vgg11 \
             --setting=default --setting=aggressive \
             --results="$V04/frontier_vgg11.jsonl" ;;
    # Seeds 2 and 3: the default of 0.4 and of 0.5 with augmentation, the
    # default and aggressive() without, for means of four seeds.
    v05-seeds)
      local seeds=(--seeds=2,3)
      frontier --model=resnet20 --epochs=30 --augment "${seeds[@]}" \
             --regime=resnet20-augment \
             --setting=scores:last_unit_threshold=0.02 --setting=default \
             --results="$V04/frontier_resnet20_augment.jsonl"
      frontier --model=vgg11 --epochs=30 --augment "${seeds[@]}" \
             --regime=vgg11-augment \
             --setting=scores:last_unit_threshold=0.02 --setting=default \
             --results="$V04/frontier_vgg11_augment.jsonl"
      frontier --model=resnet20 --epochs=30 "${seeds[@]}" \
             --regime=resnet20 --setting=default --setting=aggressive \
             --results="$V04/frontier_resnet20.jsonl"
      frontier --model=resnet20 --classes=5-9 --init_weights="$PRETRAINED" \
             --epochs=15 --learning_rate=0.01 "${seeds[@]}" \
             --regime=finetune --setting=default --setting=aggressive \
             --results="$V04/frontier_finetune.jsonl"
      frontier --model=vgg11 --epochs=30 "${seeds[@]}" --regime=vgg11 \
             --setting=default --setting=aggressive \
             --results="$V04/frontier_vgg11.jsonl" ;;
    # The default confirmed at full width on images no choice was made on:
    # 5,000 training images, the 5,000 held-out validation images.
    v04-holdout) taskset -c 0 python -m benchmarks.frontier \
             --dataset=shared:cifar10 --image_size=32 --width=1.0 \
             --batch_size=128 --seeds=0,1 --threads=1 --holdout \
             --max_train=5000 --model=resnet20 --epochs=30 \
             --regime=resnet20-full-holdout --setting=default \
             --results="$V04/holdout_resnet20.jsonl" ;;
    v06-observe)
      observe_drift --model=resnet20 --epochs=30 --regime=resnet20
      observe_drift --model=vgg11 --epochs=30 --regime=vgg11
      observe_drift --model=resnet20 --epochs=30 --augment \
             --regime=resnet20-augment
      pretrain
      observe_drift --model=resnet20 --classes=5-9 \
             --init_weights="$PRETRAINED" --epochs=15 --learning_rate=0.01 \
             --regime=finetune ;;
    # The drift policy against fresh baselines (SEEDS=2,3 bash ... for
    # other seeds than 0 and 1).
    v06-resnet20) frontier --model=resnet20 --epochs=30 --regime=resnet20 \
             "${DRIFT[@]}" --results="$V06/frontier_resnet20.jsonl" ;;
    v06-finetune) pretrain
      frontier --model=resnet20 --classes=5-9 --init_weights="$PRETRAINED" \
             --epochs=15 --learning_rate=0.01 --regime=finetune \
             "${DRIFT[@]}" --setting=drift:threshold=0.01 \
             --results="$V06/frontier_finetune.jsonl" ;;
    v06-vgg11) frontier --model=vgg11 --epochs=30 --regime=vgg11 \
             --setting=drift:threshold=0.02 --seeds="${SEEDS:-0}" \
             --results="$V06/frontier_vgg11.jsonl" ;;
    # keras.io's recipe: Adam 1e-3 at batch 32, ReduceLROnPlateau and
    # EarlyStopping (best weights back), at most 60 epochs.
    v06-open) frontier --model=resnet20 --epochs=60 --regime=open-ended \
             --optimizer=adam --learning_rate=0.001 --weight_decay=0 \
             --batch_size=32 --lr_schedule=constant --reduce_lr_patience=2 \
             --early_stopping_patience=6 --setting=default \
             --setting=drift:threshold=0.02 --setting=drift:threshold=0.01 \
             --seeds="${SEEDS:-0,1}" \
             --results="$V06/frontier_open.jsonl" ;;
    # With augmentation mapped on the pipeline (found, so the stem runs
    # forward): FeatureDrift's default, which freezes under augmentation.
    v06-augment) frontier --model=resnet20 --epochs=30 --augment \
             --regime=resnet20-augment --setting=drift \
             --seeds="${SEEDS:-0,1}" \
             --results="$V06/frontier_resnet20_augment.jsonl" ;;
    v06-report) python -m benchmarks.frontier --report \
             --results="$(ls "$V06"/frontier_*.jsonl | paste -sd,)" \
             --plot="$V06/frontier.png" ;;
    v06-observe-report) python -m benchmarks.observe_drift --report \
             --results="$V06/observe_drift.jsonl" \
             --plot="$V06/observe_drift.png" ;;
    # Version 0.7: the default ScheduleOrDrift() against fresh baselines
    # where it differs from 0.6's (pre-trained stems, no schedule), with
    # the alternatives for a pre-trained stem, and where it does not
    # (dropout); one of the paper's models at CIFAR size.
    v07-finetune) pretrain
      frontier --model=resnet20 --classes=5-9 --init_weights="$PRETRAINED" \
             --epochs=15 --learning_rate=0.01 --regime=finetune \
             --setting=drift:threshold=0.01 --setting=drift:threshold=0.005 \
             --seeds="${SEEDS:-0,1,2,3}" \
             --results="$V07/frontier_finetune.jsonl" ;;
    # ScheduleOrDrift and the default on the held-out validation images
    # (two processes each, seeds 0-1 on core 0 and 2-3 on core 1, CORE=1).
    # --max_train applies before the class filter: 4000 gives 2,016
    # training images of classes 5-9, 8000 gives 4,044.
    v07-finetune-holdout) pretrain
      frontier --model=resnet20 --classes=5-9 --init_weights="$PRETRAINED" \
             --epochs=15 --learning_rate=0.01 --regime=finetune-holdout \
             --holdout --max_train=4000 --max_val=2000 \
             --setting=schedule_or_drift --seeds="${SEEDS:-0,1,2,3}" \
             --results="$V07/holdout_finetune.jsonl"
      frontier --model=resnet20 --classes=5-9 --init_weights="$PRETRAINED" \
             --epochs=15 --learning_rate=0.01 --regime=finetune-holdout-4k \
             --holdout --max_train=8000 --max_val=4000 \
             --setting=schedule_or_drift \
             --setting=scores:last_unit_threshold=0.02,freeze_augmented=False \
             --seeds="${SEEDS:-0,1,2,3}" \
             --results="$V07/holdout_finetune_4k.jsonl" ;;
    v07-finetune-b) pretrain
      frontier --model=resnet20 --classes=5-9 --init_weights="$PRETRAINED" \
             --epochs=15 --learning_rate=0.01 --regime=finetune-b \
             --setting=aggressive \
             --setting=drift:threshold=0.01,patience=3 \
             --seeds="${SEEDS:-0,1,2,3}" \
             --results="$V07/frontier_finetune_b.jsonl" ;;
    v07-open) frontier --model=resnet20 --epochs=60 --regime=open-ended \
             --optimizer=adam --learning_rate=0.001 --weight_decay=0 \
             --batch_size=32 --lr_schedule=constant --reduce_lr_patience=2 \
             --early_stopping_patience=6 --setting=drift:threshold=0.01 \
             --seeds="${SEEDS:-0,1,2,3}" \
             --results="$V07/frontier_open.jsonl" ;;
    v07-open-b) frontier --model=resnet20 --epochs=60 --regime=open-ended-b \
             --optimizer=adam --learning_rate=0.001 --weight_decay=0 \
             --batch_size=32 --lr_schedule=constant --reduce_lr_patience=2 \
             --early_stopping_patience=6 --setting=drift:threshold=0.005 \
             --seeds="${SEEDS:-0,1,2,3}" \
             --results="$V07/frontier_open_b.jsonl" ;;
    v07-dropout) frontier --model=resnet20 --epochs=30 --dropout=0.1 \
             --regime=resnet20-dropout --setting=default \
             --seeds="${SEEDS:-0,1}" \
             --results="$V07/frontier_resnet20_dropout.jsonl" ;;
    # keras.applications.ResNet50(weights=None) at 32x32 (2,000 training
    # images, batch 32: BatchNorm's moving statistics lag at fewer steps).
    # frontier_resnet50_absolute_rule.jsonl ran the same command at commit
    # 521cc29, whose default read ResNet50's stem as pre-trained.
    v07-resnet50) frontier --model=resnet50 --width=1.0 --tune_train=2000 \
             --tune_val=1000 --batch_size=32 --optimizer=adam \
             --learning_rate=0.001 --weight_decay=0 --epochs=12 \
             --regime=resnet50 --setting=default --seeds="${SEEDS:-0}" \
             --results="$V07/frontier_resnet50.jsonl" ;;
    v07-report) python -m benchmarks.frontier --report \
             --results="$(ls "$V07"/*.jsonl | paste -sd,)" \
             --plot="$V07/frontier.png" ;;
    # Version 0.8: the probe's size against a 512-input probe, and runs
    # with probe_size='auto' (the default since 0.8), on held-out images.
    # A unit's own drift beside its drift, ResNet-20 from scratch.
    v08-own-drift) taskset -c "${CORE:-0}" python -m benchmarks.observe_drift \
             "${FRONTIER[@]}" --seeds=0 --model=resnet20 --epochs=30 \
             --regime=resnet20 --results="$V08/observe_own_drift.jsonl" ;;
    v08-overhead) overhead "$V08/overhead.jsonl" ;;
    # The same, run again later: the first did not reproduce (the
    # machine's speed drifts over minutes; docs/results.md).
    v08-overhead-rerun) overhead "$V08/overhead_rerun.jsonl" ;;
    v08-probe-size)
      probe_size --model=resnet20 --epochs=12 --regime=resnet20
      pretrain
      probe_size --model=resnet20 --classes=5-9 --init_weights="$PRETRAINED" \
             --epochs=8 --learning_rate=0.01 --regime=finetune ;;
    v08-holdout-resnet20) frontier --model=resnet20 --epochs=30 \
             --regime=resnet20-holdout --holdout --max_train=4000 \
             --max_val=2000 --setting=default --seeds="${SEEDS:-0,1,2,3}" \
             --results="$V08/holdout_resnet20.jsonl" ;;
    # Not run yet: the default's decisions there come from the scores,
    # which the probe's size does not change (docs/results.md).
    v08-finetune) pretrain
      frontier --model=resnet20 --classes=5-9 --init_weights="$PRETRAINED" \
             --epochs=15 --learning_rate=0.01 --regime=finetune \
             --setting=default --setting=schedule_or_drift \
             --seeds="${SEEDS:-0,1}" --results="$V08/frontier_finetune.jsonl" ;;
    v08-holdout-dropout) frontier --model=resnet20 --epochs=30 \
             --dropout=0.1 --regime=resnet20-dropout-holdout --holdout \
             --max_train=4000 --max_val=2000 --setting=default \
             --seeds="${SEEDS:-0,1,2,3}" \
             --results="$V08/holdout_resnet20_dropout.jsonl" ;;
    v08-holdout-vgg11) frontier --model=vgg11 --epochs=30 \
             --regime=vgg11-holdout --holdout --max_train=4000 \
             --max_val=2000 --setting=default --seeds="${SEEDS:-0,1,2,3}" \
             --results="$V08/holdout_vgg11.jsonl" ;;
    # The default in the regimes it does not freeze in (or hardly) on the
    # tuning split: open-ended and with augmentation, on held-out images.
    v08-holdout-open) frontier --model=resnet20 --epochs=60 \
             --regime=open-ended-holdout --holdout --max_train=4000 \
             --max_val=2000 --optimizer=adam --learning_rate=0.001 \
             --weight_decay=0 --batch_size=32 --lr_schedule=constant \
             --reduce_lr_patience=2 --early_stopping_patience=6 \
             --setting=default --seeds="${SEEDS:-0,1,2,3}" \
             --results="$V08/holdout_open.jsonl" ;;
    v08-holdout-augment) frontier --model=resnet20 --epochs=30 --augment \
             --regime=resnet20-augment-holdout --holdout --max_train=4000 \
             --max_val=2000 --setting=default --seeds="${SEEDS:-0,1,2,3}" \
             --results="$V08/holdout_augment.jsonl" ;;
    # keras.applications.ResNet50 as in v07-resnet50, on held-out images.
    v08-holdout-resnet50) frontier --model=resnet50 --width=1.0 \
             --holdout --max_train=2000 --max_val=1000 --batch_size=32 \
             --optimizer=adam --learning_rate=0.001 --weight_decay=0 \
             --epochs=12 --regime=resnet50-holdout --setting=default \
             --seeds="${SEEDS:-0,1,2,3}" \
             --results="$V08/holdout_resnet50.jsonl" ;;
    # What a freeze could gain in those open-ended runs (after the best
    # epoch, after the second rate cut), with the fill and replay costs of
    # 0.7's open-ended runs, which froze the whole stem.
    v08-open-analysis) python -m benchmarks.open_ended \
             --results="$V08/holdout_open.jsonl,$V06/frontier_open.jsonl" \
             --costs="$V07/frontier_open.jsonl" ;;
    v08-report) python -m benchmarks.frontier --report \
             --results="$(ls "$V08"/*.jsonl | grep -v probe_size | paste -sd,)" \
             --plot="$V08/frontier.png"
      python -m benchmarks.probe_size --report \
             --results="$V08/probe_size.jsonl" ;;
    # Augmentation mapped onto the tf.data pipeline and not declared:
    # before detection (augmented_inputs=False: a freeze replays one
    # augmented view), detected (the default), declared. One seed.
    augment-pipeline) frontier --model=resnet20 --epochs=30 --augment \
             --seeds=0 --regime=resnet20-augment-pipeline \
             --setting=default@augmented_inputs=false \
             --setting=default@augmented_inputs=detect \
             --setting=default@augmented_inputs=true \
             --results="$RESULTS/augment_pipeline.jsonl" ;;
    # keras.io's transfer learning recipe on a base pre-trained here at
    # 32x32 (no ImageNet weights can be downloaded): phase 1 (frozen base,
    # new head, 10 epochs) and phase 2 (unfrozen, Adam 1e-5, 3 epochs), on
    # 32x32 images (three variants) and resized to 96x96 (no augmentation).
    transfer-learning)
      local tl=(taskset -c 0 python -m benchmarks.transfer_learning
                --dataset=shared:cifar10 --base=mobilenetv2 --threads=1)
      "${tl[@]}" --image_size=32 \
             --output_json="$RESULTS/transfer_learning_mobilenetv2_32.json"
      "${tl[@]}" --image_size=96 --variants=none \
             --output_json="$RESULTS/transfer_learning_mobilenetv2_96.json" ;;
    v04-report) python -m benchmarks.frontier --report \
             --results="$(ls "$V04"/*.jsonl | paste -sd,)" \
             --plot="$V04/frontier.png" ;;
    frontier-report) python -m benchmarks.frontier --report \
             --results="$(ls "$RESULTS"/frontier_*.jsonl | paste -sd,)" \
             --plot="$RESULTS/frontier.png" ;;
    # A plan that grows the stem four times.
    growth) growth_plan --batch_size=128 --epochs=9 \
             --schedule=3:1,4:2,5:3,6:5,7:8 --output_dir=outputs/growth ;;
    # At batch 32 (the open-ended regime's): a fill, then the first and
    # later replays at one cut and at the next.
    growth-batch32) growth_plan --batch_size=32 --epochs=10 \
             --schedule=3:1,6:2 --output_dir=outputs/growth32 ;;
    resnet20) python -m examples.compare --model=resnet20 --width=1.0 \
             "${CIFAR[@]}" --epochs=10 --output_dir=outputs/resnet20 ;;
    vgg11) python -m examples.compare --model=vgg11 --width=0.5 \
             "${CIFAR[@]}" --epochs=10 --output_dir=outputs/vgg11 ;;
    mnist) python -m examples.compare --model=small_cnn --width=1.0 \
             --dataset=shared:mnist --image_size=28 --batch_size=128 \
             --epochs=8 --output_dir=outputs/mnist ;;
    replay) taskset -c 0 python -m benchmarks.replay_benchmark \
             --model=resnet20 --width=1.0 --dataset=shared:cifar10 \
             --image_size=32 --max_train=10000 --max_val=5000 \
             --batch_size=128 --epochs=10 --cut_epoch=1 --cut_units=7 \
             --threads=1 --runs=plain,stem_forward,whole_validation,cached_validation,head_only \
             --output_json=benchmarks/results/replay.json ;;
    jit) python -m benchmarks.jit_benchmark --model=resnet20 --cut_units=7 ;;
    deep) for model in resnet50 resnet152; do
            python -m examples.train --model="$model" --width=1.0 \
              --dataset=shared:cifar10 --image_size=32 --max_train=1000 \
              --max_val=500 --batch_size=64 --epochs=6 --learn_drop \
              --verbose=0 --output_dir="outputs/$model"
          done ;;
    *) echo "unknown experiment: $1" >&2; return 2 ;;
  esac
}
for name in "${@:-observe frontier-resnet20 frontier-finetune frontier-vgg11 frontier-augment frontier-dropout frontier-report v04-resnet20 v04-finetune v04-augment v04-holdout v04-vgg11-augment v04-vgg11 v05-seeds v04-report}"; do
  for one in $name; do run "$one"; done
done

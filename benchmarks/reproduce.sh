#!/usr/bin/env bash
# Every figure of the README's "Results", in the order they were run there:
# bash benchmarks/reproduce.sh [name ...]   (names: sweep resnet20 vgg11
# mnist replay jit deep). Results go to outputs/<name>/.
source "$(dirname "$0")/../scripts/env.sh"
CIFAR=(--dataset=shared:cifar10 --image_size=32 --max_train=10000
       --batch_size=128)
run() {
  case "$1" in
    sweep) python -m benchmarks.threshold_sweep --dataset=shared:cifar10 \
             --model=resnet20 --width=0.5 --tune_train=5000 --tune_val=1000 \
             --epochs=10 --batch_size=128 --thresholds=0.3,0.5,0.7 \
             --patiences=1,2 --output_dir=outputs/sweep ;;
    resnet20) python -m examples.compare --model=resnet20 --width=1.0 \
             "${CIFAR[@]}" --epochs=10 --output_dir=outputs/resnet20 ;;
    vgg11) python -m examples.compare --model=vgg11 --width=0.5 \
             "${CIFAR[@]}" --epochs=10 --output_dir=outputs/vgg11 ;;
    mnist) python -m examples.compare --model=small_cnn --width=1.0 \
             --dataset=shared:mnist --image_size=28 --batch_size=128 \
             --epochs=8 --output_dir=outputs/mnist ;;
    replay) python -m benchmarks.replay_benchmark --model=resnet20 \
             --width=1.0 "${CIFAR[@]}" --epochs=5 --cut_epoch=1 \
             --cut_units=7 --output_json=outputs/replay/replay.json ;;
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
for name in "${@:-sweep resnet20 vgg11 mnist replay jit deep}"; do
  for one in $name; do run "$one"; done
done

#!/bin/bash
# MobileNetV2 (ReLU6, CIFAR strides) on a 6,000-image subset of the real CIFAR-10 copy: the ReLU6
# network, then budget runs keeping 50 % and 25 % of its activations (channel gates).
cd /work/main
source .venv/bin/activate
export CUDA_HOME=/usr/local/cuda
COMMON="--model mobilenet_v2 --data-dir /data/cifar --device cpu --limit-train 6000 --batch-size 64 --seed 0"
date; alphakern train $COMMON --activation relu --epochs 6 --augment --out /tmp/mnv2/relu6 > /tmp/mnv2/relu6.log 2>&1; echo relu6 rc=$?
for b in 0.5 0.25; do
  date; alphakern train $COMMON --granularity channel --init /tmp/mnv2/relu6 --budget $b --epochs 2 \
    --finetune-epochs 2 --distill --augment --out /tmp/mnv2/budget$b > /tmp/mnv2/budget$b.log 2>&1; echo budget$b rc=$?
done
date

"""archstudy's shared PyTorch core: models, datasets and the training loop (no Ray here).

    python -m trainables --model resnet20 --data mnist-5k --epochs 2 --seed 0
"""

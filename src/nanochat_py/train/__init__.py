"""Training: tokenizer, base pretraining, SFT, RL and evaluation, on a laptop CPU or on GPUs (torchrun).

Every stage reads and writes checkpoints that `nanochat_py.load` accepts, so any stage can start from any
loadable model. The CLI (`nanochat-py train ...`, `nanochat-py eval`) is a thin layer over these modules.
"""

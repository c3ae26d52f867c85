"""Training (layer 4): the settings of pretraining and task training, the pure training loops
(VAE, task BNN), a task's samples, and the stages (pretrain, extract, train, evaluate) that join
data, compute and files for the CLI and the studies.

May import: `codes`, `models`, `data` and the top-level modules.
"""

"""Continual learning on codes (`hybnn continual`): Split-MNIST learned one digit pair after
another by the task BNN, with a replay memory of codes (`memory`), per-class generators in code
space (`generative`), and the task sequence with its metrics and checkpoints (`run`)."""

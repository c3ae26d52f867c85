"""Continual learning on codes (`hybnn continual`): Split-MNIST learned one digit pair after
another by the task BNN, with a replay memory of codes (`memory`), per-class generators in code
space (`generative`), learners that cannot forget: one model per class fitted on its own codes
(`class_models`), the task sequence with its metrics and checkpoints (`sequence`), and the
settings of a run with their defaults (`settings`, torch-free). Layer 6.

May import: `deploy` and every layer below it; never `fed`, `bench`, `study` or `cli`.
"""

# a scenario's headline accuracy after the last task, the metric its settings are chosen on: on
# all classes seen (class), averaged over the tasks (task)
HEADLINE = {"class": "final_seen_acc", "task": "average_acc"}

"""Continual learning on codes (`hybnn continual`): Split-MNIST learned one digit pair after
another by the task BNN, with a replay memory of codes (`memory`), per-class generators in code
space (`generative`), and the task sequence with its metrics and checkpoints (`run`)."""

# a scenario's headline accuracy after the last task, the metric its settings are chosen on: on
# all classes seen (class), averaged over the tasks (task)
HEADLINE = {"class": "final_seen_acc", "task": "average_acc"}

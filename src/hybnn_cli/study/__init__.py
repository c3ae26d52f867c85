"""Studies (layer 8): the reproduction study, its report, the continual and federated study
records, result files with their provenance, the stage cache, and the generated text of the README
and docs.

May import: every layer below `cli`.
"""

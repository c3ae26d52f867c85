"""Studies (layer 8): the reproduction study, its report, the continual and federated study
records, the federated studies (`fed_*`: each runs, records and renders its own generated blocks),
result files with their provenance, the stage cache, and the generated text of the README and
docs.

May import: every layer below `cli`.
"""

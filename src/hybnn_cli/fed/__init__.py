"""Federated training of the task BNN on Flower (FedHyBNN), layer 6.

Layout follows Flower's examples: `local_training.py` holds the ML glue (data partitions, local
training, global evaluation) on top of `train.bnn_loop`; `client_app.py` and `server_app.py` are
thin Flower apps; `strategy.py` is the validating FedAvg; `partition.py` splits the data;
`payload.py` is the wire format of model updates (float or packed sign bits). `inprocess.py` drives
the apps in one process (the default of `hybnn fed` and of most tests); `deployment.py` runs them on
Flower's Deployment Engine (SuperLink + SuperNodes, TLS, SuperNode authentication) on loopback;
`launch.py` picks the engine.

May import: `deploy` and every layer below it; never `continual`, `bench`, `study` or `cli`.
"""

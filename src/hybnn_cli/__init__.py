"""hybnn: hybrid binary neural networks from the command line.

The library in layers, each importing only the ones below it (tests/test_layers.py checks it):

0. the top-level modules: `errors`, `fileio` (safe writes, provenance of files), `threads`,
   `device`, `distributed` (torchrun groups), `sealed` (the sealed test split), `options`;
1. `data`: datasets, splits, tasks, image files;
2. `models`: VAE, task BNN, binary CNN baseline, layers, quantizers, checkpoints;
3. `codes`: the codes file, encoding, shards;
4. `train`: settings, training loops, a task's samples, the pipeline's stages;
5. `deploy`: deploy files and bundles, prediction;
6. `fed` (federated training on Flower) and `continual` (continual learning on codes), side by side;
7. `bench`: the kernels against their contenders;
8. `study`: the studies, their result files and the generated docs;
9. `cli`: the `hybnn` command line.

`hybnn_kernels` (the torch-free runtime, in `kernels/`) sits below all of them and imports none.
"""

__version__ = "0.1.0"

"""Export exactness on real MNIST (skipped unless HYBNN_DATA points at it): the full test set is
encoded by a (seeded, untrained) encoder, a BNN is trained briefly for every task 1–5 and for the
10 classes, and the exported kernel model must give the torch model's predictions on all 10,000
codes with zero mismatches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hybnn_cli.data.tasks import parse_task
from hybnn_cli.data.tensors import codes_to_tensor
from hybnn_cli.deploy.export_head import runtime_from_model, torch_predict
from hybnn_cli.models.bnn import BNNShape, TaskBNN
from hybnn_cli.train.bnn_loop import train_bnn
from hybnn_cli.train.configs import BNNConfig


@pytest.fixture(scope="module")
def mnist_codes(mnist_dir):
    from hybnn_cli.codes.extract import encode_batches
    from hybnn_cli.data.datasets import load_split
    from hybnn_cli.models.vae import BinaryVAE

    images, labels = load_split("mnist", "test", mnist_dir)
    torch.manual_seed(0)
    vae = BinaryVAE(200).eval()
    codes = np.concatenate([c for _, c in encode_batches(vae.encoder, images, 2000)])
    return codes, labels


@pytest.mark.slow
@pytest.mark.parametrize("task", ["1", "2", "3", "4", "5", "all"])
def test_export_equals_torch_on_the_mnist_test_set(mnist_codes, task):
    codes, labels = mnist_codes
    t = parse_task(task)
    idx, y = t.select(labels)
    x = codes_to_tensor(codes[idx], 200)
    torch.manual_seed(1)
    model = TaskBNN(BNNShape(200, 128, t.n_classes))
    cfg = BNNConfig(task=t.name, epochs=1, batch_size=256, threads=2)
    train_bnn(model, cfg, x, torch.from_numpy(y), x[:256], torch.from_numpy(y[:256]),
              torch.optim.Adam(model.parameters(), lr=cfg.lr))
    model.eval()
    rt = runtime_from_model(model)
    want_scores, want = torch_predict(model, codes)  # every one of the 10,000 codes
    scores, got = rt.run(codes)
    assert int(np.count_nonzero(got != want)) == 0
    np.testing.assert_array_equal(scores, want_scores)
    assert len(np.unique(got)) == t.n_classes  # not a constant model: the comparison has teeth

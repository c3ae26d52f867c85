"""The binary CNN baseline: input binarizations, the sign collapse, model sizes."""

import pytest
import torch

from hybnn_cli.data.tasks import parse_task
from hybnn_cli.models.binary_cnn import (
    BaselineConfig,
    BinaryCNN,
    binarize_input,
    distinct_inputs,
    predict,
)
from hybnn_cli.models.bnn import BNNShape, TaskBNN
from hybnn_cli.models.layers import BinaryConv2d, BinaryLinear
from hybnn_cli.models.summary import model_summary
from hybnn_cli.train.bnn_loop import train_epoch


def test_binarizations_on_the_pixel_range():
    x = torch.tensor([0.0, 0.25, 0.4999, 0.5, 1.0])
    assert binarize_input(x, "sign").tolist() == [1, 1, 1, 1, 1]  # sign(0) = +1
    assert binarize_input(x, "threshold").tolist() == [-1, -1, -1, 1, 1]
    assert torch.equal(binarize_input(x, "none"), x)


def test_sign_input_collapses_generated_images_to_one_prediction():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, 28, 28, generator=g)
    y = (x.mean((1, 2, 3)) > 0.5).long()  # a learnable label
    assert distinct_inputs(x, "sign") == 1
    assert distinct_inputs(x, "threshold") == 64
    torch.manual_seed(0)
    model = BinaryCNN(2, "sign")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        train_epoch(model, opt, x, y, 16, g)
    assert predict(model, x).unique().numel() == 1


def test_sign_baseline_on_mnist_scores_the_share_of_the_class_it_always_predicts(mnist_dir):
    from hybnn_cli.train import stages

    task = parse_task("1")
    cfg = BaselineConfig(task=task.name, binarize="sign", epochs=1, train_limit=600, threads=1)
    m = stages.train_baseline(task, cfg, None, mnist_dir)
    pred, counts = m["predicted_class_counts"], m["test_class_counts"]
    assert sorted(pred)[0] == 0  # one class is never predicted
    only = max(range(2), key=lambda i: pred[i])
    assert m["test_acc"] == pytest.approx(counts[only] / sum(counts))


def test_summary_counts_binary_and_float_parameters_from_the_modules():
    shape = BNNShape(200, 128, 2)
    s = model_summary(TaskBNN(shape))
    t = s["total"]
    assert t["binary_params"] == shape.n_bits * shape.hidden + shape.hidden * shape.n_classes
    assert t["float_params"] == 2 * (shape.hidden + shape.n_classes)  # BN scale and shift
    assert t["float_buffers"] == 2 * (shape.hidden + shape.n_classes)  # running mean and var
    assert t["bits"] == t["binary_params"] + 32 * (t["float_params"] + t["float_buffers"])
    cnn = BinaryCNN(2)
    binary = sum(m.weight.numel() for m in cnn.modules()
                 if isinstance(m, BinaryLinear | BinaryConv2d))
    assert model_summary(cnn)["total"]["binary_params"] == binary
    assert [r["type"] for r in model_summary(cnn)["layers"]].count("BinaryConv2d") == 3

"""`digitlab export --seed-format`: the seeds' own networks, as the tutorials wrote them, load the weights.

Each class below is the seed's code (layer names and order as written; log_softmax where the seed
had it), so ``load_state_dict(strict=True)`` fails on any key digitlab renames, and the outputs must
match digitlab's model with the same weights.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from digitlab.cli import main
from digitlab.engine.checkpoint import save_checkpoint
from digitlab.errors import DigitlabError
from digitlab.models import create_model
from digitlab.models.seed_format import seed_models, seed_state_dict


class Net(nn.Module):  # seed 000: pytorch/examples mnist/main.py
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = F.relu(self.conv2(F.relu(self.conv1(x))))
        x = self.dropout1(F.max_pool2d(x, 2))
        x = self.dropout2(F.relu(self.fc1(torch.flatten(x, 1))))
        return F.log_softmax(self.fc2(x), dim=1)


class Model(nn.Module):  # seed 001
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, kernel_size=3)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.pool2 = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(1600, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = self.pool2(F.relu(self.conv2(self.pool1(F.relu(self.conv1(x))))))
        return self.fc2(F.relu(self.fc1(torch.flatten(x, start_dim=1))))


class FC2Layer(nn.Module):  # seed 002
    def __init__(self, input_size=784, n_hidden=8, output_size=10):
        super().__init__()
        self.input_size = input_size
        self.network = nn.Sequential(
            nn.Linear(input_size, n_hidden),
            nn.ReLU(),
            nn.Linear(n_hidden, n_hidden),
            nn.ReLU(),
            nn.Linear(n_hidden, output_size),
            nn.LogSoftmax(dim=1),
        )

    def forward(self, x):
        return self.network(x.view(-1, self.input_size))


class CNN(nn.Module):  # seed 002
    def __init__(self, input_size=784, n_feature=6, output_size=10):
        super().__init__()
        self.n_feature = n_feature
        self.conv1 = nn.Conv2d(in_channels=1, out_channels=n_feature, kernel_size=5)
        self.conv2 = nn.Conv2d(n_feature, n_feature, kernel_size=5)
        self.fc1 = nn.Linear(n_feature * 4 * 4, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), kernel_size=2)
        x = F.max_pool2d(F.relu(self.conv2(x)), kernel_size=2)
        x = F.relu(self.fc1(x.view(-1, self.n_feature * 4 * 4)))
        return F.log_softmax(self.fc2(x), dim=1)


class CifarNet(nn.Module):  # seed 002's CIFAR-10 Net (its class is called Net there)
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv2(self.pool(F.relu(self.conv1(x))))))
        x = F.relu(self.fc2(F.relu(self.fc1(x.view(-1, 16 * 5 * 5)))))
        return self.fc3(x)


class LeNet5(nn.Module):  # seed 003
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels=1, out_channels=6, kernel_size=5, stride=1),
            nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
            nn.Conv2d(in_channels=6, out_channels=16, kernel_size=5, stride=1),
            nn.Sigmoid(),
            nn.AvgPool2d(kernel_size=2, stride=2),
        )
        self.classifier = nn.Sequential(
            nn.Linear(in_features=16 * 4 * 4, out_features=120),
            nn.Linear(in_features=120, out_features=84),
            nn.Linear(in_features=84, out_features=10),
        )

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


class MyNetwork(nn.Module):  # seed 004
    def __init__(self, intput_size=28, input_channels=1, output_size=10):
        super().__init__()
        self.convpooling = nn.Sequential(
            nn.Conv2d(input_channels, 16, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        _size = ((intput_size - 4) // 2 - 2) // 2
        self.fc = nn.Sequential(nn.Flatten(1), nn.Dropout(), nn.Linear(64 * _size * _size, output_size))

    def forward(self, inputs):
        return self.fc(self.convpooling(inputs))


class VGG(nn.Module):  # seed 002
    def __init__(self):
        super().__init__()
        self.cfg = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
        self.features = self._make_layers(self.cfg)
        self.classifier = nn.Linear(512, 10)

    def forward(self, x):
        out = self.features(x)
        return self.classifier(out.view(out.size(0), -1))

    def _make_layers(self, cfg):
        layers = []
        in_channels = 3
        for x in cfg:
            if x == "M":
                layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
            else:
                layers += [
                    nn.Conv2d(in_channels, x, kernel_size=3, padding=1),
                    nn.BatchNorm2d(x),
                    nn.ReLU(inplace=True),
                ]
                in_channels = x
        layers += [nn.AvgPool2d(kernel_size=1, stride=1)]
        return nn.Sequential(*layers)


# digitlab name -> (the seed's class, input shape (C, size), whether the seed ends in log_softmax)
SEEDS = {
    "cnn": (Net, (1, 28), True),
    "cnn-k": (Model, (1, 28), False),
    "mlp": (FC2Layer, (1, 28), True),
    "cnn-small": (CNN, (1, 28), True),
    "cifar-net": (CifarNet, (3, 32), False),
    "lenet5": (LeNet5, (1, 28), False),
    "cnn-004": (MyNetwork, (1, 28), False),
    "vgg": (VGG, (3, 32), False),
}


def test_every_seed_model_has_its_seed_class_here():
    assert set(seed_models()) == set(SEEDS)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_the_seeds_class_loads_the_weights_strictly_and_answers_the_same(name):
    seed_cls, (c, s), log_softmax = SEEDS[name]
    torch.manual_seed(0)
    ours = create_model(name, num_classes=10, in_channels=c, image_size=s)
    with torch.no_grad():  # BatchNorm statistics that are not the defaults, so a mix-up would show
        for m in ours.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    theirs = seed_cls()
    theirs.load_state_dict(seed_state_dict(name, ours.state_dict()), strict=True)
    ours.eval(), theirs.eval()
    x = torch.randn(4, c, s, s)
    with torch.no_grad():
        want = F.log_softmax(ours(x), dim=1) if log_softmax else ours(x)
        assert torch.allclose(theirs(x), want, atol=1e-5)


def test_cli_writes_seed_000s_state_dict(tmp_path, capsys):
    torch.manual_seed(1)
    model = create_model("cnn").eval()
    ckpt = {
        "model_name": "cnn",
        "model_args": {"num_classes": 10, "in_channels": 1, "image_size": 28},
        "state_dict": {k: v.half() for k, v in model.state_dict().items()},  # as `export` stores it
        "dataset": "mnist",
        "classes": [str(i) for i in range(10)],
        "channels": 1,
        "image_size": 28,
        "mean": [0.1307],
        "std": [0.3081],
    }
    save_checkpoint(tmp_path / "best.pt", ckpt)
    assert main(["export", str(tmp_path / "best.pt"), str(tmp_path / "seed.pt"), "--seed-format"]) == 0
    assert "seed key names" in capsys.readouterr().out
    state = torch.load(tmp_path / "seed.pt", weights_only=True)  # a plain dict of tensors
    assert sorted(state) == sorted(Net().state_dict()) and all(v.dtype == torch.float32 for v in state.values())
    net = Net()
    net.load_state_dict(state, strict=True)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(net.eval()(x).exp(), F.softmax(model(x), 1), atol=1e-2)  # float16 storage


def test_not_a_seed_model_is_refused(capsys, tmp_path):
    with pytest.raises(DigitlabError, match="not one of the seeds' networks"):
        seed_state_dict("fast", create_model("fast").state_dict())

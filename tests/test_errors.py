"""digitlab.errors: the one user-facing exception and the unknown-name message."""

from __future__ import annotations

from digitlab.errors import DigitlabError, unknown_name


def test_unknown_name_suggests_the_close_one_and_lists_all():
    err = unknown_name("model", "lenet", ["mlp", "lenet5", "fast"])
    assert isinstance(err, DigitlabError)
    assert str(err) == "unknown model 'lenet'; did you mean 'lenet5'?; choose one of: fast, lenet5, mlp"


def test_unknown_name_without_a_close_one_only_lists():
    assert str(unknown_name("dataset", "zzz", ["mnist", "cifar10"])) == (
        "unknown dataset 'zzz'; choose one of: cifar10, mnist"
    )

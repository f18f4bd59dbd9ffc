"""Fuzzing checkpoints: a byte-mutated model file is a DigitlabError or a model that answers validly.

Mutations of the shipped ``default.pt`` (no digest: it predates it) may load when they hit
weights, and must then still give finite probabilities; the same model saved with a digest
must either be refused or load exactly the weights that were saved. Every case stays within
a memory bound. The short campaigns run in every test run; ``slow`` ones run many more inputs.
"""

from __future__ import annotations

import math
import resource
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from digitlab.engine.checkpoint import load_checkpoint, save_checkpoint
from digitlab.errors import DigitlabError
from digitlab.inference.predictor import Predictor, default_model_path

MEMORY_BOUND_MB = 500  # the hardening target for any input under 10 MB
SHORT = settings(
    max_examples=15,
    deadline=5000,  # ms per input: one load and one prediction take ~0.1 s
    derandomize=True,  # seeded: the same inputs on every run
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
LONG = settings(SHORT, max_examples=600)

ORIGINAL = default_model_path().read_bytes()
WITH_DIGEST_DIR = Path(tempfile.mkdtemp(prefix="digitlab-fuzz-"))
WITH_DIGEST = save_checkpoint(WITH_DIGEST_DIR / "digest.pt", torch.load(default_model_path(), weights_only=True))
WITH_DIGEST_BYTES = WITH_DIGEST.read_bytes()
WEIGHTS = torch.load(default_model_path(), weights_only=True)["state_dict"]
SEVEN = Image.new("L", (60, 60))
SEVEN.paste(255, (15, 12, 45, 18))
SEVEN.paste(255, (38, 12, 44, 50))  # a crude 7: something the model reads


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def mutations(size: int):
    """1-8 byte edits: (offset, new byte), anywhere in the file."""
    return st.lists(st.tuples(st.integers(0, size - 1), st.integers(0, 255)), min_size=1, max_size=8)


def mutated(data: bytes, edits: list[tuple[int, int]]) -> Path:
    buf = bytearray(data)
    for offset, byte in edits:
        buf[offset] = byte
    path = Path(tempfile.mkstemp(suffix=".pt", dir=WITH_DIGEST_DIR)[1])
    path.write_bytes(bytes(buf))
    return path


def load_or_error(path: Path) -> Predictor | None:
    """The predictor, or None for a DigitlabError; any other exception fails the test."""
    try:
        return Predictor.load(path)
    except DigitlabError as exc:
        assert "\n" not in str(exc) and str(exc)
        return None
    finally:
        path.unlink()


def assert_answers_validly(predictor: Predictor) -> None:
    try:
        pred = predictor.predict(SEVEN)
    except DigitlabError:  # refusing (non-finite outputs) is a valid answer too
        return
    assert pred.status in ("ok", "uncertain", "empty")
    for item in pred.items:
        assert all(math.isfinite(p) and 0 <= p <= 1 for p in item.probs)
        assert sum(item.probs) == pytest.approx(1.0, abs=1e-4)


def _campaign_without_digest(edits) -> None:
    start = peak_rss_mb()
    predictor = load_or_error(mutated(ORIGINAL, edits))
    if predictor is not None:
        assert_answers_validly(predictor)
    assert peak_rss_mb() - start < MEMORY_BOUND_MB


def _campaign_with_digest(edits) -> None:
    path = mutated(WITH_DIGEST_BYTES, edits)
    try:
        ckpt = load_checkpoint(path)
    except DigitlabError:
        return
    finally:
        path.unlink()
    # Loaded despite the edits: they hit bytes outside the weights and the digested fields.
    assert set(ckpt["state_dict"]) == set(WEIGHTS)
    assert all(torch.equal(ckpt["state_dict"][k], WEIGHTS[k]) for k in WEIGHTS)


@SHORT
@given(edits=mutations(len(ORIGINAL)))
def test_a_mutated_shipped_model_is_an_error_or_answers_validly(edits):
    _campaign_without_digest(edits)


@SHORT
@given(edits=mutations(len(WITH_DIGEST_BYTES)))
def test_a_mutated_checkpoint_with_digest_never_loads_changed_weights(edits):
    _campaign_with_digest(edits)


@pytest.mark.slow
@LONG
@given(edits=mutations(len(ORIGINAL)))
def test_long_campaign_mutated_shipped_model(edits):
    _campaign_without_digest(edits)


@pytest.mark.slow
@LONG
@given(edits=mutations(len(WITH_DIGEST_BYTES)))
def test_long_campaign_mutated_checkpoint_with_digest(edits):
    _campaign_with_digest(edits)


def _small_checkpoint() -> dict:
    from digitlab.engine.checkpoint import FORMAT_VERSION
    from digitlab.models import create_model

    args = {"num_classes": 10, "in_channels": 1, "image_size": 28}
    return {
        "digitlab": FORMAT_VERSION,
        "model_name": "mlp",
        "model_args": args,
        "state_dict": create_model("mlp", **args).state_dict(),
        "classes": list("0123456789"),
        "channels": 1,
        "image_size": 28,
        "mean": [0.1307],
        "std": [0.3081],
        "task": "digits",
        "temperature": 0.5,
        "metrics": {"test_acc": 0.9},
    }


ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.one_of(st.integers(-3, 30), st.floats(), st.text(max_size=2)), max_size=12),
    st.dictionaries(st.text(max_size=8), st.one_of(st.integers(-3, 30), st.text(max_size=3)), max_size=4),
)


FIELDS = {"field": st.sampled_from(sorted(_small_checkpoint())), "value": ODD_VALUES}


@settings(SHORT, max_examples=80)
@given(**FIELDS)
def test_any_value_in_any_field_is_an_error_or_a_working_model(field, value):
    _field_campaign(field, value)


@pytest.mark.slow
@settings(SHORT, max_examples=2000)
@given(**FIELDS)
def test_long_campaign_odd_field_values(field, value):
    _field_campaign(field, value)


def _field_campaign(field, value) -> None:
    ckpt = _small_checkpoint()
    if field == "model_args" and isinstance(value, dict):
        value = {**ckpt["model_args"], **value}  # an extra or changed argument
    ckpt[field] = value
    path = Path(tempfile.mkstemp(suffix=".pt", dir=WITH_DIGEST_DIR)[1])
    torch.save(ckpt, path)  # no digest: only the field checks stand between it and the model
    predictor = load_or_error(path)
    if predictor is not None:
        assert_answers_validly(predictor)

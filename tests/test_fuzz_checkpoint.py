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

"""Inference: safe decoding (image), MNIST-style preprocessing (preprocess), digit segmentation
(segment), and the Predictor the CLI and the web app call (predictor)."""

from digitlab.inference.image import MAX_PIXELS, load_image
from digitlab.inference.predictor import DigitPrediction, Prediction, Predictor
from digitlab.inference.preprocess import DigitInput, preprocess_digits, preprocess_generic

__all__ = [
    "MAX_PIXELS",
    "DigitInput",
    "DigitPrediction",
    "Prediction",
    "Predictor",
    "load_image",
    "preprocess_digits",
    "preprocess_generic",
]

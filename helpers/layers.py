"""Keras layers of the book's own model (model_6), registered so that saved models load in
Keras' safe mode (no pickled Python code).

Importing this module imports Keras; model_6's chapter and every loader of saved models
(:func:`helpers.case_study.load_trained`, :mod:`helpers.predict`) import it first.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="helpers")
class PerImageStandardization(keras.layers.Layer):
    """Scale each image to mean 0 and standard deviation 1 over its pixels.

    X-rays differ in exposure and contrast from machine to machine and day to day; taking
    out each image's own mean and spread leaves the model the shapes and textures, not the
    film's brightness. An image with no variation (all one value) becomes all zeros.
    """

    def __init__(self, epsilon: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, inputs):
        ops = keras.ops
        inputs = ops.cast(inputs, self.compute_dtype)
        mean = ops.mean(inputs, axis=(1, 2, 3), keepdims=True)
        std = ops.std(inputs, axis=(1, 2, 3), keepdims=True)
        return (inputs - mean) / (std + self.epsilon)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}

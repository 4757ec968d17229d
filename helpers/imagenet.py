"""ImageNet weights for Keras' MobileNetV2, offline.

Keras downloads its MobileNetV2 ImageNet files (``weights="imagenet"``), which the book's
machines cannot reach. This module's one job is to give those models genuine ImageNet
weights without a download: it converts Google's ImageNet-trained MobileNetV2 1.0 (224 px,
TensorFlow Lite, int8) embedded in ``data/weights/`` into a Keras weights file, and says
what to pass as ``weights=``. The conversion (:func:`convert_tflite`):

- dequantises each convolution's int8 kernel per output channel (scale, zero point) and its
  int32 bias (scale = input scale x weight scale), as the TFLite kernels read them;
- maps the 53 convolution ops, in graph order, onto the 35 ``Conv2D``, 17
  ``DepthwiseConv2D`` and 1 ``Dense`` layers of ``keras.applications.MobileNetV2``, with
  TFLite's conv ``[out, kh, kw, in]`` and depthwise ``[1, kh, kw, channels]`` kernels
  transposed to Keras' ``[kh, kw, in, out]`` and ``[kh, kw, channels, 1]``;
- makes each ``BatchNormalization`` layer an identity carrying the folded bias (batch
  norm is folded into the TFLite convolutions): gamma = 1, beta = bias, moving mean = 0,
  moving variance = 1 - epsilon in float32, so that variance + epsilon is exactly 1 and the
  layer computes ``x + beta``: exactly where TensorFlow's ``rsqrt(1)`` is 1, and within two
  float32 units in the last place where its vectorised ``rsqrt`` gives ``1 - 2**-24`` (as
  measured on an AVX-512 host);
- drops TFLite's background logit (index 0 of 1001) from the classifier.

Caveats, wherever these weights are used: they are not Keras' per-size files (Keras trained
one network per input size) but the 224 px network after int8 rounding, used at any size;
and with batch norm folded, the base run with ``training=True`` is not the original network,
so fine-tune with ``training=False`` and every ``BatchNormalization`` layer frozen.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from helpers import config
from helpers.files import DiskCache

if TYPE_CHECKING:  # keras is imported where it is used: deciding weights= needs no TensorFlow
    import keras

#: The folder of embedded weights (TFLite model, labels, licence, test photo, README).
WEIGHTS_DIR = config.REPO_ROOT / "data" / "weights"
#: Google's ImageNet MobileNetV2 1.0, 224 px, int8 (google-coral/test_data, Apache 2.0).
EMBEDDED_TFLITE = WEIGHTS_DIR / "tf2_mobilenet_v2_1.0_224_ptq.tflite"
#: The sha256 of :data:`EMBEDDED_TFLITE`; any other file is refused unless asked for.
EMBEDDED_SHA256 = "5d3137241276e79c86d14a74fe43581398ae0e815191d3dba45495b810840e8c"
#: The 1001 class names in the TFLite model's order (line 1 = background).
EMBEDDED_LABELS = WEIGHTS_DIR / "imagenet_labels.txt"
#: The upstream commit the embedded files come from, for the restore message.
SOURCE_COMMIT = "104342d2d3480b3e66203073dac24f4e2dbb4c41"

#: Where converted weights are cached; ``$CHEST_XRAY_WEIGHTS_CACHE`` moves it.
DEFAULT_WEIGHTS_CACHE_DIR = config.REPO_ROOT / "_build" / "cache" / "weights"
WEIGHTS_CACHE_ENV = "CHEST_XRAY_WEIGHTS_CACHE"

#: The keywords :func:`base_weights_argument` accepts besides a weights file.
BASE_WEIGHTS_KEYWORDS: tuple[str, str] = ("imagenet", "random")

_CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D")
_N_TFLITE_CONVS = 53  # 36 CONV_2D (the last = logits) + 17 DEPTHWISE_CONV_2D
_N_TFLITE_CLASSES = 1001  # index 0 = background
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class WeightsSourceError(ValueError):
    """A weights source that is not the file it should be (wrong hash, wrong structure)."""


@dataclass(frozen=True)
class FoldedConvolution:
    """One TFLite convolution, dequantised: kernel in TFLite layout, folded bias per channel."""

    op_name: str
    kernel: np.ndarray
    bias: np.ndarray


def file_sha256(path: str | os.PathLike) -> str:
    """The hex sha256 (64 lowercase digits) of the bytes of the file at ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _restore_hint(path: Path) -> str:
    if path.resolve() == EMBEDDED_TFLITE.resolve():
        return (
            f"The embedded ImageNet MobileNetV2 file {path} is missing. Restore it from the "
            f"repository (`git checkout -- data/weights/{EMBEDDED_TFLITE.name}`) or copy "
            f"{EMBEDDED_TFLITE.name} from GitHub google-coral/test_data at commit "
            f"{SOURCE_COMMIT} into {WEIGHTS_DIR} (sha256 {EMBEDDED_SHA256})."
        )
    return f"The TFLite weights source {path} does not exist (expected a .tflite file)."


def verify_source(path: str | os.PathLike, expected_sha256: str = EMBEDDED_SHA256) -> str:
    """Check that a TFLite source exists and has the expected sha256.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.tflite`` file.
    expected_sha256 : str
        The hash it must have (the embedded file's, unless a caller deliberately passes
        another file).

    Returns
    -------
    str
        The file's sha256.

    Raises
    ------
    FileNotFoundError
        If ``path`` is not a file; for the embedded file the message says how to restore it.
    WeightsSourceError
        If its sha256 differs from ``expected_sha256`` (the message names the file and both
        hashes).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(_restore_hint(path))
    actual = file_sha256(path)
    if actual != expected_sha256.lower():
        raise WeightsSourceError(
            f"Refusing the TFLite weights source {path}: its sha256 is {actual}, expected "
            f"{expected_sha256.lower()} (the embedded {EMBEDDED_TFLITE.name}). Pass "
            "expected_sha256= only if you mean to convert a different file."
        )
    return actual


def tflite_interpreter(path: str | os.PathLike, **kwargs: Any) -> Any:
    """A TFLite interpreter for ``path``, tensors allocated, without default delegates.

    ``ai_edge_litert`` is used where installed (TensorFlow deprecates ``tf.lite.Interpreter``
    for it; same API), else ``tf.lite.Interpreter`` with its deprecation warning silenced.
    Without the XNNPACK delegate every op and tensor stays visible as the file defines it.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.tflite`` file.
    **kwargs
        Passed to the interpreter (e.g. ``experimental_preserve_all_tensors=True``).

    Returns
    -------
    Interpreter
        With ``allocate_tensors()`` called.
    """
    try:  # pragma: no cover - depends on what is installed
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
        OpResolverType = tf.lite.experimental.OpResolverType
    kwargs.setdefault(
        "experimental_op_resolver_type", OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
        interpreter = Interpreter(model_path=os.fspath(path), **kwargs)
    interpreter.allocate_tensors()
    return interpreter


def dequantize(
    values: np.ndarray, scales: np.ndarray, zero_points: np.ndarray, axis: int
) -> np.ndarray:
    """``(values - zero_point) * scale`` in float32, per channel along ``axis``.

    Parameters
    ----------
    values : np.ndarray
        Integer tensor (int8 weights or int32 biases).
    scales, zero_points : np.ndarray
        One entry per channel along ``axis``, or one entry for the whole tensor.
    axis : int
        The quantised dimension.

    Returns
    -------
    np.ndarray
        float32, same shape as ``values``.

    Raises
    ------
    ValueError
        If there are neither one nor ``values.shape[axis]`` scales/zero points.

    Examples
    --------
    >>> weights = np.array([[2, -4], [3, 5]], np.int8)
    >>> dequantize(weights, np.array([0.5, 0.25]), np.array([0, 1]), 0).tolist()
    [[1.0, -2.0], [0.5, 1.0]]
    """
    scales = np.asarray(scales, dtype=np.float64)
    zero_points = np.asarray(zero_points, dtype=np.int64)
    n = values.shape[axis]
    if scales.size not in (1, n) or zero_points.size not in (1, n):
        raise ValueError(
            f"expected 1 or {n} scales and zero points along axis {axis} of a tensor of "
            f"shape {values.shape}, got {scales.size} and {zero_points.size}"
        )
    shape = [1] * values.ndim
    shape[axis] = -1
    real = (values.astype(np.int64) - zero_points.reshape(shape)) * scales.reshape(shape)
    return real.astype(np.float32)


def _quantization(detail: dict) -> tuple[np.ndarray, np.ndarray, int]:
    params = detail["quantization_parameters"]
    return params["scales"], params["zero_points"], int(params["quantized_dimension"])


def read_folded_convolutions(tflite_path: str | os.PathLike) -> list[FoldedConvolution]:
    """Every convolution of a quantised TFLite model, dequantised, in graph order.

    Parameters
    ----------
    tflite_path : str or os.PathLike
        A TFLite model whose convolutions have int8 weights and int32 biases.

    Returns
    -------
    list of FoldedConvolution
        One per ``CONV_2D`` / ``DEPTHWISE_CONV_2D`` op, in the order the graph runs them.

    Raises
    ------
    WeightsSourceError
        If a convolution lacks a bias, its weights are not int8 or its bias not int32, or
        the bias scale is not input scale x weight scale (the file is then not the kind
        of model this conversion understands).
    """
    interpreter = tflite_interpreter(tflite_path)
    tensors = {detail["index"]: detail for detail in interpreter.get_tensor_details()}
    # _get_ops_details is the interpreter's only listing of ops; it has been stable since
    # TF 2.5 and ai_edge_litert keeps it.
    convolutions = []
    for op in interpreter._get_ops_details():
        if op["op_name"] not in _CONV_OPS:
            continue
        inputs = [int(i) for i in op["inputs"]]
        if len(inputs) < 3 or inputs[2] < 0:
            raise WeightsSourceError(
                f"{tflite_path}: op {op['index']} ({op['op_name']}) has no bias input"
            )
        activation, weight, bias = (tensors[i] for i in inputs[:3])
        if weight["dtype"] != np.int8 or bias["dtype"] != np.int32:
            raise WeightsSourceError(
                f"{tflite_path}: op {op['index']} ({op['op_name']}) has "
                f"{np.dtype(weight['dtype'])} weights and {np.dtype(bias['dtype'])} bias; "
                "expected int8 and int32"
            )
        w_scales, w_zeros, w_axis = _quantization(weight)
        b_scales, b_zeros, _ = _quantization(bias)
        in_scale = _quantization(activation)[0]
        # The int32 bias is stored at scale input_scale * weight_scale per channel; checking
        # it proves that reading the bias with its own scales is the TFLite arithmetic.
        if not np.allclose(b_scales, in_scale * w_scales, rtol=1e-5, atol=0):
            raise WeightsSourceError(
                f"{tflite_path}: op {op['index']} ({op['op_name']}): bias scales are not "
                "input scale x weight scale"
            )
        convolutions.append(
            FoldedConvolution(
                op_name=op["op_name"],
                kernel=dequantize(
                    interpreter.get_tensor(weight["index"]), w_scales, w_zeros, w_axis
                ),
                bias=dequantize(interpreter.get_tensor(bias["index"]), b_scales, b_zeros, 0),
            )
        )
    return convolutions


def _identity_bn_weights(bn, bias: np.ndarray) -> list[np.ndarray]:
    """gamma=1, beta=bias, mean=0, variance=1-epsilon: the layer computes ``x + bias``."""
    epsilon = np.float32(bn.epsilon)
    variance = np.float32(1.0) - epsilon
    if float(variance + epsilon) != 1.0:  # then rsqrt(variance + epsilon) would not be 1
        raise ValueError(
            f"{bn.name}: epsilon {bn.epsilon} does not give variance + epsilon == 1 in float32"
        )
    channels = bias.shape[0]
    return [
        np.ones(channels, np.float32),
        bias.astype(np.float32),
        np.zeros(channels, np.float32),
        np.full(channels, variance, np.float32),
    ]


def _set_conv_and_bn(conv, bn, folded: FoldedConvolution, index: int) -> None:
    import keras

    if not isinstance(bn, keras.layers.BatchNormalization) or bn.input is not conv.output:
        raise WeightsSourceError(
            f"Keras layer {conv.name} is not followed by its BatchNormalization"
        )
    expected_op = (
        "DEPTHWISE_CONV_2D" if isinstance(conv, keras.layers.DepthwiseConv2D) else "CONV_2D"
    )
    # Both layouts become Keras' [kh, kw, in, out] (depthwise: [kh, kw, channels, 1]).
    kernel = np.transpose(folded.kernel, (1, 2, 3, 0))
    expected_shape = tuple(conv.kernel.shape)
    if folded.op_name != expected_op or kernel.shape != expected_shape:
        raise WeightsSourceError(
            f"TFLite convolution {index} ({folded.op_name}, kernel {folded.kernel.shape}) does not "
            f"fit Keras layer {conv.name} ({type(conv).__name__}, kernel {expected_shape})"
        )
    conv.set_weights([kernel])
    bn.set_weights(_identity_bn_weights(bn, folded.bias))


def _set_classifier(dense, folded: FoldedConvolution) -> None:
    kernel = folded.kernel
    expected = (_N_TFLITE_CLASSES, 1, 1, int(dense.kernel.shape[0]))
    if folded.op_name != "CONV_2D" or kernel.shape != expected:
        raise WeightsSourceError(
            f"the TFLite logits convolution has kernel {kernel.shape}, expected {expected}"
        )
    # Index 0 is TFLite's background class, which Keras' 1000-way classifier does not have.
    dense.set_weights([kernel[1:, 0, 0, :].T.copy(), folded.bias[1:].copy()])


def convert_tflite(
    tflite_path: str | os.PathLike = EMBEDDED_TFLITE,
    *,
    include_top: bool = False,
    input_size: int = 224,
    classifier_activation: str | None = "softmax",
    expected_sha256: str = EMBEDDED_SHA256,
) -> keras.Model:
    """Build Keras' MobileNetV2 (alpha 1.0) with the weights of the TFLite model.

    Parameters
    ----------
    tflite_path : str or os.PathLike
        The TFLite MobileNetV2; the embedded one by default.
    include_top : bool
        Keep the 1000-class ImageNet classifier (TFLite's background logit dropped).
    input_size : int
        Height = width of the input (any size >= 32; the weights do not depend on it).
    classifier_activation : str or None
        The classifier's activation when ``include_top``; ``None`` gives logits.
    expected_sha256 : str
        The hash ``tflite_path`` must have.

    Returns
    -------
    keras.Model
        ``keras.applications.MobileNetV2(alpha=1.0, include_top=include_top, weights=None,
        input_shape=(input_size, input_size, 3))`` with every convolution filled and each
        BatchNormalization layer an identity that adds the folded bias (see the module
        docstring). Inputs are expected in [-1, 1], as for Keras' own weights.

    Raises
    ------
    FileNotFoundError, WeightsSourceError
        See :func:`verify_source` and :func:`read_folded_convolutions`; also if the number
        of convolutions or any kernel shape does not match the Keras model.
    ValueError
        If ``input_size`` is not an integer >= 32.
    """
    if (
        isinstance(input_size, bool)
        or not isinstance(input_size, (int, np.integer))
        or input_size < 32
    ):
        raise ValueError(
            f"input_size must be an integer >= 32 (MobileNetV2's minimum), got {input_size!r}"
        )
    verify_source(tflite_path, expected_sha256)
    folded = read_folded_convolutions(tflite_path)
    if len(folded) != _N_TFLITE_CONVS:
        raise WeightsSourceError(
            f"{tflite_path} has {len(folded)} convolutions; MobileNetV2 1.0 has {_N_TFLITE_CONVS}"
        )

    import keras

    model = keras.applications.MobileNetV2(
        input_shape=(int(input_size), int(input_size), 3),
        alpha=1.0,
        include_top=include_top,
        weights=None,
        classifier_activation=classifier_activation,
    )
    layers = model.layers
    weighted = [
        i
        for i, layer in enumerate(layers)
        if isinstance(
            layer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D, keras.layers.Dense)
        )
    ]
    expected_count = _N_TFLITE_CONVS if include_top else _N_TFLITE_CONVS - 1
    if len(weighted) != expected_count:
        raise WeightsSourceError(
            f"Keras' MobileNetV2 has {len(weighted)} weighted layers, expected {expected_count}"
        )
    for index, (layer_index, source) in enumerate(zip(weighted, folded)):
        layer = layers[layer_index]
        if isinstance(layer, keras.layers.Dense):
            _set_classifier(layer, source)
        else:
            _set_conv_and_bn(layer, layers[layer_index + 1], source, index)
    return model


def weights_cache_dir(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache folder: ``cache_dir``, else ``$CHEST_XRAY_WEIGHTS_CACHE``, else the default.

    Parameters
    ----------
    cache_dir : str, os.PathLike or None
        An explicit folder.

    Returns
    -------
    Path
        The folder (not created here).
    """
    if cache_dir is not None:
        return Path(cache_dir)
    value = os.environ.get(WEIGHTS_CACHE_ENV)
    return Path(value) if value else DEFAULT_WEIGHTS_CACHE_DIR


def _cached_weights_name(source_sha256: str) -> str:
    import keras

    return f"mobilenet_v2_1.0_no_top_{source_sha256[:16]}_keras-{keras.__version__}.weights.h5"


@contextlib.contextmanager
def _random_streams_kept():
    """Leave Python's, NumPy's and Keras' random streams as they were before the block.

    Keras draws the seeds of initializers and of its global ``SeedGenerator`` from Python's
    ``random``; the block's draws are undone when it ends, so that what follows sees the
    same stream whether or not the block ran.
    """
    import random

    from keras.src.backend.common import global_state
    from keras.src.random.seed_generator import GLOBAL_SEED_GENERATOR

    python_state, numpy_state = random.getstate(), np.random.get_state()
    generator = global_state.get_global_attribute(GLOBAL_SEED_GENERATOR)
    generator_state = None if generator is None else np.array(generator.state.numpy())
    try:
        yield
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)
        global_state.set_global_attribute(GLOBAL_SEED_GENERATOR, generator)
        if generator is not None:
            generator.state.assign(generator_state)


def mobilenet_v2_weights(
    *,
    source: str | os.PathLike = EMBEDDED_TFLITE,
    cache_dir: str | os.PathLike | None = None,
    expected_sha256: str = EMBEDDED_SHA256,
) -> Path:
    """The converted no-top ImageNet weights as a Keras weights file, cached on disk.

    The file loads into ``keras.applications.MobileNetV2(input_shape=(s, s, 3),
    include_top=False, weights=str(path))`` for any ``s >= 32`` (96, 128, 160, 224, or 64
    in tests): a no-top MobileNetV2 has only convolution and batch-normalisation weights,
    whose shapes do not depend on the input size. The cache key is the source's sha256 and
    the Keras version; a hit returns the file without converting. A miss converts once at
    224 px and writes through a temporary file renamed into place, so the cache never holds
    a half-written file.

    Parameters
    ----------
    source : str or os.PathLike
        The TFLite model; the embedded one by default.
    cache_dir : str, os.PathLike or None
        Where to cache; see :func:`weights_cache_dir`.
    expected_sha256 : str
        The hash ``source`` must have.

    Returns
    -------
    Path
        The ``.weights.h5`` file.

    Raises
    ------
    FileNotFoundError, WeightsSourceError
        If the source is missing or not the expected file (checked before the cache).
    """
    source_sha256 = verify_source(source, expected_sha256)
    # One file per source and Keras version, a few MB each: no cap.
    cache = DiskCache(weights_cache_dir(cache_dir), pattern="*.weights.h5", what="weights cache")
    name = _cached_weights_name(source_sha256)
    if cache.read(name, lambda path: path if path.is_file() else None) is not None:
        return cache.path(name)
    # Building the network draws its (overwritten) initial weights from the random streams
    # the chapter seeded: without this, a chapter that converts (an empty cache, as on a
    # fresh clone) trained differently from one that found the file (measured: model_4's
    # test AUC 0.889 against 0.841 with the same seed).
    with _random_streams_kept():
        model = convert_tflite(
            source, include_top=False, input_size=224, expected_sha256=expected_sha256
        )
    # Keras insists on the .weights.h5 suffix, so the temporary name keeps it; the file
    # is what the caller asked for, so failing to write it is an error, not a warning.
    return cache.write(
        name,
        lambda tmp: model.save_weights(tmp, overwrite=True),
        suffix=".weights.h5",
        must_succeed=True,
    )


def _how_to_get_weights() -> str:
    return (
        "Use base_weights='imagenet' for the ImageNet weights converted from the embedded "
        f"data/weights/{EMBEDDED_TFLITE.name} (offline), base_weights='random' for "
        "random initialisation, or the path of a Keras weights file such as Keras' own "
        "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_<size>_no_top.h5 "
        "(from https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/)."
    )


def base_weights_argument(
    base_weights: str | os.PathLike | None,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> str | None:
    """What to pass as Keras' ``weights=`` for a MobileNetV2 base.

    Parameters
    ----------
    base_weights : str, os.PathLike or None
        ``"imagenet"``: the weights converted from the embedded TFLite file (never a
        download); ``"random"`` or ``None``: random initialisation; otherwise the path of an
        existing Keras weights file (``.h5`` or ``.weights.h5``). The keywords are matched
        case-insensitively.
    cache_dir : str, os.PathLike or None
        Where the converted ImageNet weights are cached (see :func:`weights_cache_dir`).

    Returns
    -------
    str or None
        A weights file path for ``weights=``, or ``None`` for random initialisation.

    Raises
    ------
    FileNotFoundError
        If the weights file, or the embedded TFLite file for ``"imagenet"``, is missing.
    ValueError
        If ``base_weights`` is none of the above, or the file is not an HDF5 weights file.
        There is never a silent fallback to random weights.

    Examples
    --------
    >>> base_weights_argument("random") is None
    True
    """
    if base_weights is None:
        return None
    if isinstance(base_weights, str) and base_weights.strip().lower() in BASE_WEIGHTS_KEYWORDS:
        if base_weights.strip().lower() == "random":
            return None
        # EMBEDDED_TFLITE is read here, at call time, so a moved or patched path is honoured.
        return str(mobilenet_v2_weights(source=EMBEDDED_TFLITE, cache_dir=cache_dir))
    if not isinstance(base_weights, (str, os.PathLike)):
        raise ValueError(
            f"base_weights must be 'imagenet', 'random', None or a weights file path, got "
            f"{type(base_weights).__name__} {base_weights!r}. {_how_to_get_weights()}"
        )
    path = Path(base_weights)
    if not path.name.lower().endswith(".h5"):
        raise ValueError(
            f"base_weights={os.fspath(base_weights)!r} is neither 'imagenet', 'random' nor a "
            f"Keras weights file (.h5 or .weights.h5). {_how_to_get_weights()}"
        )
    if path.is_dir():
        raise ValueError(
            f"The base weights file {path} is a folder, not a file. {_how_to_get_weights()}"
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"The base weights file {path} does not exist. {_how_to_get_weights()}"
        )
    with open(path, "rb") as handle:
        if handle.read(len(_HDF5_SIGNATURE)) != _HDF5_SIGNATURE:
            raise ValueError(
                f"The base weights file {path} is not an HDF5 file. {_how_to_get_weights()}"
            )
    return str(path)


def imagenet_class_names(labels_path: str | os.PathLike = EMBEDDED_LABELS) -> tuple[str, ...]:
    """The 1000 ImageNet class names in the order of Keras' classifier outputs.

    Parameters
    ----------
    labels_path : str or os.PathLike
        A labels file of 1001 lines whose first is ``background`` (the TFLite order).

    Returns
    -------
    tuple of str
        Lines 2-1001: index ``i`` names Keras output ``i``.

    Raises
    ------
    FileNotFoundError
        If the file is missing.
    ValueError
        If it does not have 1001 lines starting with ``background``.
    """
    path = Path(labels_path)
    if not path.is_file():
        raise FileNotFoundError(f"The ImageNet labels file {path} does not exist")
    lines = path.read_text(encoding="utf-8").splitlines()
    if len(lines) != _N_TFLITE_CLASSES or lines[0].strip() != "background":
        first = lines[0] if lines else "(nothing)"
        raise ValueError(
            f"{path}: expected {_N_TFLITE_CLASSES} lines starting with 'background', got "
            f"{len(lines)} lines starting with {first!r}"
        )
    return tuple(line.strip() for line in lines[1:])

"""Forward and backward passes over preallocated buffers: the numerical core of the MLP.

The maths is the textbook one, for layers l = 0..L-1 with activations f_l, X: (n, d):

    Z_l = A_l W_l + b_l,   A_{l+1} = f_l(Z_l),   A_0 = X      (Z_{L-1}: the logits, no f)
    dZ_{L-1} = (P - Y) / n                  (sigmoid + BCE, softmax + CE; see outputs.py)
    dW_l = A_l^T dZ_l,   db_l = sum over samples of dZ_l
    dZ_{l-1} = (dZ_l W_l^T) * f'_{l-1}(Z_{l-1})       (W_l as before the update)

``plain_forward`` and ``plain_backward`` at the end are these lines written out, samples-major
and without buffers; the tests check ``forward`` and ``backward`` against them. Those two
compute the same things, stored for speed, because small networks are bound by the number of
NumPy calls and large ones by passes over memory:

* Features-by-samples: every array is (units, n_samples), the transpose of the formulas above.
  A hidden layer's rows are then one contiguous block, and broadcasting a row of samples
  (e.g. the output error) is cheap.
* Biases folded into the weights: layer l is one block theta_l = [W_l; b_l] of shape
  (fan_in + 1, fan_out), and every activation buffer ends with a row of ones, so
  Z_l^T = theta_l^T [A_l^T; 1] and [dW_l; db_l] = [A_l^T; 1] dZ_l are one matmul each.
* One flat vector holds all blocks (and another all gradients), with per-layer views: the
  optimiser, clipping and weight decay then cost a few calls for the whole network.
* Buffers are allocated once per batch size (Workspace) and everything is written with out=.

So in a Workspace, for layer l: z[l] holds Z_l^T, delta[l] dZ_l^T, a[l - 1] [A_l^T; 1]
(``inputs`` is [A_0^T; 1] = [X^T; 1]), and a block of the gradient vector [dW_l; db_l].
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .activations import Activation

Array = npt.NDArray[np.floating]


class ParameterLayout:
    """Where each layer's [W; b] block lives inside one flat vector.

    Block l has shape (layer_sizes[l] + 1, layer_sizes[l + 1]): rows 0..fan_in-1 are W_l in
    the public (fan_in, fan_out) orientation, the last row is b_l: (1, fan_out).
    """

    def __init__(self, layer_sizes: Sequence[int]) -> None:
        self.layer_sizes = tuple(layer_sizes)
        self.block_shapes = [(fan_in + 1, fan_out)
                             for fan_in, fan_out in itertools.pairwise(self.layer_sizes)]
        sizes = [rows * cols for rows, cols in self.block_shapes]
        self.offsets = [0, *np.cumsum(sizes).tolist()]
        self.size = self.offsets[-1]

    def blocks(self, flat: Array) -> list[Array]:
        """Views [W_l; b_l]: (fan_in + 1, fan_out) into ``flat``: (size,)."""
        return [flat[start:stop].reshape(shape) for start, stop, shape
                in zip(self.offsets[:-1], self.offsets[1:], self.block_shapes, strict=True)]

    def weights(self, flat: Array) -> list[Array]:
        """Views W_l: (fan_in, fan_out) into ``flat``."""
        return [block[:-1] for block in self.blocks(flat)]

    def biases(self, flat: Array) -> list[Array]:
        """Views b_l: (1, fan_out) into ``flat``."""
        return [block[-1:] for block in self.blocks(flat)]

    def weight_mask(self, dtype: npt.DTypeLike) -> Array:
        """Flat vector with 1 where a weight lives and 0 where a bias lives."""
        mask = np.ones(self.size, dtype=dtype)
        for bias in self.biases(mask):
            bias[...] = 0.0
        return mask

    def flatten(self, weights: Sequence[npt.ArrayLike], biases: Sequence[npt.ArrayLike],
                dtype: npt.DTypeLike) -> Array:
        """A new flat vector holding the given W_l: (fan_in, fan_out) and b_l: (1, fan_out)."""
        flat = np.empty(self.size, dtype=dtype)
        for block, w, b in zip(self.blocks(flat), weights, biases, strict=True):
            block[:-1] = w
            block[-1:] = b
        return flat


class Network:
    """What the passes need from a model, as views made once: they stay valid because the
    flat parameter vector is never reallocated (and are cheaper than slicing per batch)."""

    def __init__(self, layout: ParameterLayout, params: Array,
                 activations: Sequence[Activation]) -> None:
        self.layer_sizes = layout.layer_sizes
        self.dtype = params.dtype
        self.blocks = layout.blocks(params)  # [W_l; b_l]: (fan_in + 1, fan_out)
        self.blocks_t = [block.T for block in self.blocks]  # (fan_out, fan_in + 1)
        self.weights = [block[:-1] for block in self.blocks]  # W_l: (fan_in, fan_out)
        self.weights_t = [w.T for w in self.weights]  # (fan_out, fan_in)
        self.activations = list(activations)


class Workspace:
    """Buffers for forward and backward passes over batches of ``n`` samples.

    inputs: [X^T; 1]: (fan_in + 1, n). For a fixed data set (full batch, validation) it is
    given once; otherwise ``load_batch`` gathers rows of X into ``rows`` (n, fan_in + 1), whose
    transpose is ``inputs`` (gathering whole rows of a samples-major X is cache-friendly).
    targets: (k, n) encoded targets (see outputs.py), given or gathered the same way.
    z[l], delta[l]: (units_l, n) pre-activations and dLoss/dZ of layer l (0-based);
    a[l]: (units_l + 1, n) hidden activations with a last row of ones, a_units[l] the view
    without it; mask[l]: bool scratch; scratch: (k, n) for the output layer.
    A hidden layer whose activation works ``in_place`` (every built-in) has z[l] = a_units[l]:
    the activation overwrites Z_l with A_l, which saves a buffer and a pass over memory.
    When backward's shortcut for the first layer applies (``rank_one``), two more buffers:
    deriv0: f'(Z_0): (units_0, n) (deriv0_t its transpose) and scaled_inputs: (fan_in + 1, n).
    """

    def __init__(self, net: Network, n: int, inputs: Array | None = None,
                 targets: Array | None = None, mean_over: int | None = None) -> None:
        layer_sizes, dtype = net.layer_sizes, net.dtype
        self.n = n
        # 1/n as a 0-d array of the model's dtype (same value as the Python float would be cast
        # to): a Python float operand costs NumPy a conversion on every call. A part of a larger
        # batch (parallel.py) scales by that batch's size, ``mean_over``.
        self.inv_n = np.array(1.0 / (mean_over or n), dtype=dtype)
        hidden, k = layer_sizes[1:-1], layer_sizes[-1]
        if inputs is None:
            self.rows = np.ones((n, layer_sizes[0] + 1), dtype=dtype)
            self.target_rows = np.empty((n, k), dtype=dtype)
            inputs, targets = self.rows.T, self.target_rows.T
        self.inputs: Array = inputs
        self.targets: Array | None = targets
        self.a = [np.ones((units + 1, n), dtype=dtype) for units in hidden]
        self.a_units = [a[:-1] for a in self.a]
        self.z = [a_units if activation.in_place else np.empty_like(a_units)
                  for a_units, activation in zip(self.a_units, net.activations, strict=True)]
        self.z.append(np.empty((k, n), dtype=dtype))  # the logits
        self.delta = [np.empty((units, n), dtype=dtype) for units in layer_sizes[1:]]
        self.delta_t = [d.T for d in self.delta]
        self.mask = [np.empty((units, n), dtype=np.bool_) for units in hidden]
        self.scratch = np.empty((k, n), dtype=dtype)
        # The shortcut pays when layer 1 has one unit and the inputs are narrower than layer 0.
        self.rank_one = (len(layer_sizes) >= 3 and layer_sizes[2] == 1
                         and layer_sizes[0] + 1 <= layer_sizes[1])
        if self.rank_one:
            self.deriv0 = np.empty((layer_sizes[1], n), dtype=dtype)
            self.deriv0_t = self.deriv0.T
            self.scaled_inputs = np.empty((layer_sizes[0] + 1, n), dtype=dtype)

    def load_batch(self, features: Array, target_rows: Array,
                   index: npt.NDArray[np.intp]) -> None:
        """Gather samples ``index`` of X: (N, fan_in) and target_rows: (N, k)."""
        np.take(features, index, axis=0, out=self.rows[:, :-1])  # the ones column stays
        np.take(target_rows, index, axis=0, out=self.target_rows)


def forward(net: Network, ws: Workspace) -> Array:
    """Fill ws.z and ws.a for the samples in ws.inputs; return the logits Z_L: (k, n)."""
    # np.matmul rather than np.dot: the same bits (one BLAS gemm), but with NumPy's OpenBLAS
    # np.dot runs large shapes (many samples, long weight gradients) much slower on several
    # threads; on RustNet's tiny shapes the two cost the same.
    a = ws.inputs  # [A_0^T; 1]
    for block_t, z, activation, a_units, a_next in zip(net.blocks_t, ws.z, net.activations,
                                                        ws.a_units, ws.a, strict=False):
        np.matmul(block_t, a, out=z)  # Z_l = A_l W_l + b_l (b_l via the ones row)
        activation.forward_into(z, a_units)  # A_{l+1} = f_l(Z_l)
        a = a_next
    return np.matmul(net.blocks_t[-1], a, out=ws.z[-1])  # the logits Z_{L-1}: no f


def backward(net: Network, grad_blocks: Sequence[Array], ws: Workspace) -> None:
    """Given ws.delta[-1] = dLoss/dZ_{L-1}, fill grad_blocks[l] = [dW_l; db_l] for every layer.

    ``net`` must still hold the parameters the forward pass used.
    """
    for layer in range(len(grad_blocks) - 1, 0, -1):  # l = L-1 down to 1
        delta = ws.delta[layer]
        np.matmul(ws.a[layer - 1], ws.delta_t[layer], out=grad_blocks[layer])  # A_l^T dZ_l
        if layer == 1 and ws.rank_one:
            _first_layer_rank_one(net, delta, ws, grad_blocks[0])
            return
        w = net.weights[layer]  # (units below, units here)
        below = ws.delta[layer - 1]
        if w.shape[1] == 1:
            # dZ_l W_l^T is an outer product here; a broadcast multiply is faster than a
            # matmul with an inner dimension of 1.
            np.multiply(w, delta, out=below)
        else:
            np.matmul(w, delta, out=below)  # dZ_l W_l^T
        # dZ_{l-1} = (dZ_l W_l^T) * f'_{l-1}(Z_{l-1}), in place
        net.activations[layer - 1].scale_delta(ws.z[layer - 1], ws.a_units[layer - 1], below,
                                               ws.mask[layer - 1])
    np.matmul(ws.inputs, ws.delta_t[0], out=grad_blocks[0])  # A_0^T dZ_0


def _first_layer_rank_one(net: Network, delta: Array, ws: Workspace, grad: Array) -> None:
    """[dW_0; db_0] when layer 1 has a single unit, without forming dZ_0.

    dZ_0 = (w dZ_1) * f'(Z_0) is then an outer product times f'(Z_0) (w: (h, 1), dZ_1: (1, n)),
    so with X = [A_0; 1]: (fan_in + 1, n),

        [dW_0; db_0][i, j] = sum_s X[i, s] dZ_1[s] f'(Z_0)[j, s] w[j]
                           = ((X * dZ_1) f'(Z_0)^T)[i, j] * w[j]

    Same maths (different rounding): it replaces the passes that form and mask dZ_0, (h, n)
    each, by one over X, which is cheaper when fan_in + 1 <= h (RustNet's [2, 12, 1]).
    """
    scaled_inputs, deriv = ws.scaled_inputs, ws.deriv0
    net.activations[0].derivative_into(ws.z[0], ws.a_units[0], deriv)
    np.multiply(ws.inputs, delta, out=scaled_inputs)
    np.matmul(scaled_inputs, ws.deriv0_t, out=grad)
    np.multiply(grad, net.weights_t[1], out=grad)  # column j times w[j]


# ---- the plain version -----------------------------------------------------------------------

def plain_forward(weights: Sequence[Array], biases: Sequence[Array],
                  activations: Sequence[Activation], X: Array) -> tuple[list[Array], list[Array]]:
    """The forward pass as written in the module docstring, samples-major, for reference.

    weights[l]: W_l (fan_in, fan_out); biases[l]: b_l (1, fan_out); activations[l]: f_l of
    hidden layer l; X: (n, d). Returns (Z, A): Z[l] = Z_l: (n, fan_out) for every layer
    (Z[-1] the logits) and A[l] = A_l: (n, fan_in of layer l), A[0] = X.
    """
    Z: list[Array] = []
    A: list[Array] = [X]
    for layer, (W, b) in enumerate(zip(weights, biases, strict=True)):
        Z.append(A[layer] @ W + b)  # Z_l = A_l W_l + b_l
        if layer < len(weights) - 1:
            A.append(activations[layer].forward(Z[layer]))  # A_{l+1} = f_l(Z_l)
    return Z, A


def plain_backward(weights: Sequence[Array], activations: Sequence[Activation],
                   Z: Sequence[Array], A: Sequence[Array],
                   dZ_last: Array) -> tuple[list[Array], list[Array]]:
    """The backward pass as written in the module docstring, for reference.

    Z, A: from ``plain_forward``; dZ_last: dLoss/dZ_{L-1}: (n, k). Returns ([dW_l: (fan_in,
    fan_out)], [db_l: (1, fan_out)]).
    """
    n_layers = len(weights)
    dW: list[Array] = [np.empty(0)] * n_layers
    db: list[Array] = [np.empty(0)] * n_layers
    dZ = dZ_last
    for layer in reversed(range(n_layers)):
        dW[layer] = A[layer].T @ dZ  # dW_l = A_l^T dZ_l
        db[layer] = dZ.sum(axis=0, keepdims=True)  # db_l = sum over samples of dZ_l
        if layer > 0:  # dZ_{l-1} = (dZ_l W_l^T) * f'_{l-1}(Z_{l-1})
            dZ = (dZ @ weights[layer].T) * activations[layer - 1].derivative(Z[layer - 1], A[layer])
    return dW, db

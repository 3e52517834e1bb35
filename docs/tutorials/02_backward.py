"""
The backward pass: the graph and the closed form
================================================

Note 001 (the DLfS chapter) draws BN's forward pass as a computational graph and links a
derivation of the backward pass that walks the graph node by node (Kratzert 2016,
"Understanding the backward pass through Batch Normalization Layer"). normlab's
:func:`normlab.functional.batch_norm_backward` uses instead the compact closed form the
chain rule collapses to. This tutorial computes the gradient three ways and checks them
against each other and against a numerical gradient.
"""

# %%
# The forward pass as a graph
# ---------------------------
# Nine nodes, one elementary operation each; every intermediate value is kept for the
# backward pass (per feature, over the m rows of the batch):
import matplotlib.pyplot as plt
import numpy as np

nodes = ["x", "mu = mean(x)", "xc = x - mu", "sq = xc^2", "var = mean(sq)",
         "std = sqrt(var+eps)", "istd = 1/std", "x_hat = xc*istd", "y = gamma*x_hat+beta"]
fig, ax = plt.subplots(figsize=(11, 3))
step = 1.65                                  # horizontal distance between nodes
for i, label in enumerate(nodes):
    ax.text(i * step, 0, label.replace(" = ", "\n= "), ha="center", va="center", fontsize=7.5,
            bbox={"boxstyle": "round", "fc": "#e8eaf6", "ec": "#3f51b5"})
    if i:
        ax.annotate("", (i * step - 0.62, 0), ((i - 1) * step + 0.62, 0),
                    arrowprops={"arrowstyle": "->"})
# xc feeds both the square and the product; x feeds both the mean and the subtraction.
ax.annotate("", (7 * step, 0.3), (2 * step, 0.3),
            arrowprops={"arrowstyle": "->", "color": "tab:red",
                        "connectionstyle": "arc3,rad=-0.2"})
ax.annotate("", (2 * step, -0.3), (0, -0.3),
            arrowprops={"arrowstyle": "->", "color": "tab:red",
                        "connectionstyle": "arc3,rad=0.3"})
ax.set_xlim(-0.8, 8 * step + 0.9)
ax.set_ylim(-1, 1.3)
ax.axis("off")
ax.set_title("BN forward as a computational graph (red: values used by two nodes)")
fig.tight_layout()

# %%
# Node by node, backwards
# -----------------------
# Each step multiplies the incoming gradient by its node's local derivative; where a value
# feeds two nodes (``x`` and ``xc``, the red edges) the two gradients add up.


def forward_graph(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=0)
    xc = x - mu
    sq = xc ** 2
    var = sq.mean(axis=0)
    std = np.sqrt(var + eps)
    istd = 1.0 / std
    x_hat = xc * istd
    y = gamma * x_hat + beta
    return y, (xc, std, istd, x_hat, gamma)


def backward_graph(dy, saved):
    xc, std, istd, x_hat, gamma = saved
    m = dy.shape[0]
    dbeta = dy.sum(axis=0)                      # y = ... + beta
    dgamma = (dy * x_hat).sum(axis=0)           # y = gamma * x_hat + ...
    dx_hat = dy * gamma
    dxc = dx_hat * istd                         # x_hat = xc * istd: first path into xc
    distd = (dx_hat * xc).sum(axis=0)
    dstd = -distd / std ** 2                    # istd = 1 / std
    dvar = 0.5 * dstd / std                     # std = sqrt(var + eps)
    dsq = np.ones_like(xc) * dvar / m           # var = mean(sq)
    dxc = dxc + 2 * xc * dsq                    # sq = xc^2: second path into xc
    dmu = -dxc.sum(axis=0)                      # xc = x - mu
    dx = dxc + dmu / m                          # mu = mean(x): second path into x
    return dx, dgamma, dbeta


# %%
# DLfS's ``__backward`` (note 001) is the same graph with a few nodes merged:
# ``dstd = -sum(dxn * xc / std^2)`` and ``dvar = 0.5 * dstd / std``.
#
# The closed form
# ---------------
# Substituting every step into the next, the gradient of one feature's column collapses to
# two sums and one elementwise pass (Ioffe & Szegedy 2015, sec. 3, simplified):
#
# .. code-block:: text
#
#     dbeta  = sum_i dy_i
#     dgamma = sum_i dy_i * x_hat_i
#     dx     = gamma / (m * std) * (m * dy - dbeta - x_hat * dgamma)
#
# The two sums are the parameter gradients, so the whole backward is one reduction pass and
# one elementwise pass. That is :func:`normlab.functional.batch_norm_backward`.
from normlab import functional as F

rng = np.random.default_rng(0)
m, d = 32, 5
x = rng.normal(2.0, 3.0, (m, d))
gamma, beta = rng.uniform(0.5, 2.0, d), rng.normal(size=d)
dy = rng.normal(size=(m, d))

y_graph, saved = forward_graph(x, gamma, beta)
grads_graph = backward_graph(dy, saved)

y_closed, cache = F.batch_norm_train(x, gamma, beta, eps=1e-5)
grads_closed = F.batch_norm_backward(dy, cache)

for name, a, b in zip(("dx", "dgamma", "dbeta"), grads_graph, grads_closed, strict=True):
    print(f"{name:7s} max |graph - closed form| = {np.abs(a - b).max():.2e}")
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)

# %%
# Against a numerical gradient
# ----------------------------
# Both could share a mistake, so check them against central differences of the scalar loss
# L = sum(dy * y) (whose gradient with respect to y is dy), in float64.


def loss(x_, gamma_, beta_):
    return float((dy * F.batch_norm_train(x_, gamma_, beta_, eps=1e-5)[0]).sum())


def numerical_gradient(f, value, h=1e-6):
    grad = np.zeros_like(value)
    for idx in np.ndindex(value.shape):
        old = value[idx]
        value[idx] = old + h
        up = f()
        value[idx] = old - h
        down = f()
        value[idx] = old
        grad[idx] = (up - down) / (2 * h)
    return grad


numeric = (numerical_gradient(lambda: loss(x, gamma, beta), x),
           numerical_gradient(lambda: loss(x, gamma, beta), gamma),
           numerical_gradient(lambda: loss(x, gamma, beta), beta))
errors = {}
for name, a, b in zip(("dx", "dgamma", "dbeta"), grads_closed, numeric, strict=True):
    errors[name] = np.abs(a - b).max() / np.abs(b).max()
    print(f"{name:7s} relative error closed form vs numerical = {errors[name]:.1e}")
    assert errors[name] < 1e-6

# %%
# The picture behind the closed form: ``dx`` is ``dy`` with its mean and its component along
# ``x_hat`` removed (then scaled by gamma / std). The gradient cannot move the batch's mean or
# its spread — BN undoes any such move — so those two directions are projected out:
dx, x_hat, std = grads_closed[0], saved[3], saved[1]
print("column sums of dx         :", dx.sum(axis=0).round(6))
print("column sums of dx * x_hat :", (dx * x_hat).sum(axis=0).round(6))

# %%
# (The second is zero only up to eps: with eps > 0, sum(x_hat^2) = m var / (var + eps) is a
# little less than m.)

fig, ax = plt.subplots(figsize=(5, 3.5))
ax.scatter(dy[:, 0], dx[:, 0] * std[0] / gamma[0], s=14, label="feature 0")
lims = np.array([dy[:, 0].min(), dy[:, 0].max()])
ax.plot(lims, lims, "k:", lw=1, label="dx = dy (no BN)")
ax.set_xlabel("incoming gradient dy")
ax.set_ylabel("dx * std / gamma")
ax.set_title("BN's backward removes dy's mean and its x_hat part")
ax.legend()
fig.tight_layout()

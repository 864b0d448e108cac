"""Deterministic PCA with numpy (no scikit-learn).

Eigen-decomposition of the covariance, accumulated in row chunks so a large
matrix is never copied whole in float64; each component's sign is fixed so its
largest-magnitude loading is positive, which makes the result reproducible.
"""

import numpy as np

_CHUNK = 16384


def pca_reduce(x, dim):
    """``x`` [n, d] -> ``[n, dim]`` float32 projection on the top ``dim`` components."""
    n, d = x.shape
    if dim >= d:
        return np.asarray(x, dtype=np.float32)
    mean = np.zeros(d)
    for s in range(0, n, _CHUNK):
        mean += x[s:s + _CHUNK].sum(axis=0, dtype=np.float64)
    mean /= n
    cov = np.zeros((d, d))  # [d, d]
    for s in range(0, n, _CHUNK):
        c = x[s:s + _CHUNK].astype(np.float64) - mean  # [chunk, d]
        cov += c.T @ c
    _, vecs = np.linalg.eigh(cov)  # ascending eigenvalues
    comps = vecs[:, ::-1][:, :dim]  # [d, dim], largest variance first
    flip = np.sign(comps[np.argmax(np.abs(comps), axis=0), np.arange(dim)])
    comps *= np.where(flip == 0, 1.0, flip)
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, _CHUNK):
        out[s:s + _CHUNK] = (x[s:s + _CHUNK].astype(np.float64) - mean) @ comps
    return out

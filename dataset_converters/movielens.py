"""MovieLens (MMGCN layout): 2048-d visual, 128-d acoustic and 100-d textual dense features."""

from dataset_converters.mmgcn import LayoutSpec, convert_layout

SPEC = LayoutSpec(
    kind="movielens",
    feature_files={"visual": "FeatureVideo_normal.npy",
                   "acoustic": "FeatureAudio_avg_normal.npy",
                   "textual": "FeatureText_stl_normal.npy"},
    required=("visual", "acoustic", "textual"),
    description="MovieLens trailers: visual 2048-d, acoustic 128-d, textual 100-d",
)


def convert(src, **kwargs):
    """MovieLens full or sample layout -> ConvertedDataset (see ``mmgcn.convert_layout``)."""
    return convert_layout(SPEC, src, **kwargs)

"""Kwai (MMGCN layout): 2048-d visual features, no acoustic, text as word pairs or absent."""

from dataset_converters.mmgcn import LayoutSpec, convert_layout

SPEC = LayoutSpec(
    kind="kwai",
    feature_files={"visual": "feat_v.pt", "acoustic": "feat_a.pt", "textual": "feat_t.pt"},
    required=("visual",),
    description="Kwai micro-videos: visual 2048-d, textual word ids when present",
)


def convert(src, **kwargs):
    """Kwai full or sample layout -> ConvertedDataset (see ``mmgcn.convert_layout``)."""
    return convert_layout(SPEC, src, **kwargs)

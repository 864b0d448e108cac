"""TikTok (MMGCN layout): 128-d visual and acoustic features, text as (item, word id) pairs."""

from dataset_converters.mmgcn import LayoutSpec, convert_layout

SPEC = LayoutSpec(
    kind="tiktok",
    feature_files={"visual": "feat_v.pt", "acoustic": "feat_a.pt", "textual": "feat_t.pt"},
    required=("visual", "acoustic", "textual"),
    description="TikTok micro-videos: visual / acoustic 128-d, textual word ids",
)


def convert(src, **kwargs):
    """TikTok full or sample layout -> ConvertedDataset (see ``mmgcn.convert_layout``)."""
    return convert_layout(SPEC, src, **kwargs)
